/* main.c: command line, configuration check, and the wiring of every module.
 *
 * The only file that knows every module: it builds the configuration (file,
 * then command-line options on top), the loop, the cache, the upstream pool,
 * the listeners and the HTTP endpoints, passes them down explicitly, and
 * runs the loop.
 *
 * Life cycle. SIGHUP (or POST /reload on the control socket) builds a new
 * configuration the same way; a bad one is refused with file:line and the
 * old one keeps running. A good one is swapped in module by module:
 * listeners first (a new address that cannot be bound refuses the whole
 * reload before anything changed), then the upstream pool (unchanged
 * upstreams keep their connections), the cache's bound (resized, not
 * emptied), the HTTP endpoints when their address changed, and the log
 * level; the old value is freed last, when nothing points into it.
 *
 * SIGTERM/SIGINT drain: /ready says 503 at once while DNS is answered for
 * lameduck; then the listeners stop reading and accepting, every query in
 * flight gets its answer (the pool's deadline bounds the wait), and only
 * then is everything closed, upstreams first, and the process exits 0.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <uv.h>

#include "admin.h"
#include "cache.h"
#include "conf.h"
#include "http.h"
#include "listen.h"
#include "log.h"
#include "mem.h"
#include "metrics.h"
#include "netwatch.h"
#include "privdrop.h"
#include "query.h"
#include "sysd.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"

#define EXIT_CONFIG 2

/* How often the loop proves it turns (/health), and how often draining
 * looks whether every query has been answered. */
#define HEARTBEAT_MS 1000
#define DRAIN_POLL_MS 20
/* Address and route changes come in bursts: one back-off reset each. */
#define NETWATCH_DEBOUNCE_MS 200
/* Cache shards per worker: few enough that each holds a useful share of
 * the byte bound, enough that two workers rarely want the same lock. */
#define CACHE_SHARDS_PER_WORKER 8

enum { OPT_CA_FILE = 256, OPT_HTTP_LISTEN, OPT_WORKERS, OPT_SHARED_CACHE };

static const struct option longopts[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "debug", no_argument, NULL, 'd' },
	{ "help", no_argument, NULL, 'h' },
	{ "listen", required_argument, NULL, 'l' },
	{ "check", no_argument, NULL, 'n' },
	{ "upstream", required_argument, NULL, 'u' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "version", no_argument, NULL, 'V' },
	{ "ca-file", required_argument, NULL, OPT_CA_FILE },
	{ "http-listen", required_argument, NULL, OPT_HTTP_LISTEN },
	{ "workers", required_argument, NULL, OPT_WORKERS },
	{ "shared-cache", required_argument, NULL, OPT_SHARED_CACHE },
	{ NULL, 0, NULL, 0 },
};

/* What the command line asked for, before it is merged into the config. */
struct options {
	const char *config_file;
	int explicit_config;
	int foreground;
	int check;
	int verbose;
	const char *ca_file;
	const char *http_listen;
	const char *workers;
	const char *shared_cache;
	const char *listen[CONF_MAX_LISTEN + 1];
	size_t n_listen;
	const char *upstream[CONF_MAX_UPSTREAM + 1];
	size_t n_upstream;
};

/* The running program: built in run(), torn down by shutdown_server. */
struct server {
	uv_loop_t loop;                /* main: signals, HTTP, worker 0 */
	const struct options *opts;
	struct conf *conf;             /* current; replaced whole on reload */
	struct tls_ctx *tls;           /* the trust store of every upstream connection */
	struct cache *cache;           /* one, shared by every worker */
	struct workers *workers;
	struct netwatch *netwatch;     /* NULL when netlink is unavailable */
	struct sysd_watchdog watchdog;
	struct http_server *http;      /* http-listen, or NULL */
	struct http_server *control;   /* control-socket, or NULL */
	struct admin admin;
	uv_signal_t sig_int, sig_term, sig_usr1, sig_hup;
	uv_timer_t heartbeat;
	uv_timer_t drain_timer;
	uint64_t drain_deadline;
	int draining;
	int stopping;
};

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: dotproxy [-dhnvV] [-c file] [-l addr[@port]]... "
	    "[-u addr[@port][#name]]...\n"
	    "                [--ca-file file] [--http-listen addr[@port]] "
	    "[--workers N]\n"
	    "                [--shared-cache redis://IP[:port][/db]|unix:/path]\n"
	    "\n"
	    "A caching DNS forwarder: plain DNS in over UDP and TCP, cache "
	    "misses out\nover DNS-over-TLS with the certificate always "
	    "verified.\n"
	    "\n"
	    "  -c, --config file     configuration file (default %s,\n"
	    "                        read when present)\n"
	    "  -d, --debug           stay in the foreground, log to stderr\n"
	    "  -h, --help            show this help and exit\n"
	    "      --http-listen addr[@port]\n"
	    "                        serve /metrics, /health, /ready and "
	    "/status over\n"
	    "                        HTTP (default port 9253; off unless "
	    "given)\n"
	    "  -l, --listen addr[@port]\n"
	    "                        listen on addr, UDP and TCP (default "
	    "127.0.0.1@53\n"
	    "                        and ::1@53); repeat for more, replaces "
	    "the file's\n"
	    "  -n, --check           check the configuration, print it, "
	    "exit (0 ok, 2 bad)\n"
	    "  -u, --upstream 'addr[@port][#name] [pin-sha256=base64]...'\n"
	    "                        DNS-over-TLS upstream and the name its "
	    "certificate\n"
	    "                        must carry (default port 853) and/or "
	    "SPKI pins;\n"
	    "                        repeat for more, replaces the file's\n"
	    "      --ca-file file    trust anchors for upstream "
	    "certificates (default:\n"
	    "                        the system trust store)\n"
	    "      --shared-cache redis://IP[:port][/db] | unix:/path[?db=N]\n"
	    "                        share answers with other instances "
	    "through Redis:\n"
	    "                        asked on a local miss, written after "
	    "an upstream\n"
	    "                        answer (off unless given)\n"
	    "  -v, --verbose         log at debug level\n"
	    "  -V, --version         print the version and exit\n"
	    "      --workers N       threads serving DNS, each with its own "
	    "sockets and\n"
	    "                        upstream connections (default 0: one "
	    "per CPU; max 64)\n"
	    "\n"
	    "Example: dotproxy -d -l 127.0.0.1@5300 "
	    "-u 127.0.0.1@8853#dns.example --ca-file ca.pem\n"
	    "See dotproxy(8) and dotproxy.conf(5).\n", CONF_DEFAULT_FILE);
}

static void
parse_args(int argc, char **argv, struct options *o)
{
	int ch;

	memset(o, 0, sizeof(*o));
	o->config_file = CONF_DEFAULT_FILE;
	while ((ch = getopt_long(argc, argv, "c:dhl:nu:vV", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'c':
			o->config_file = optarg;
			o->explicit_config = 1;
			break;
		case 'd':
			o->foreground = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'l':
			if (o->n_listen >= CONF_MAX_LISTEN) {
				fprintf(stderr, "command line: more than %d "
				    "listen addresses\n", CONF_MAX_LISTEN);
				exit(EXIT_CONFIG);
			}
			o->listen[o->n_listen++] = optarg;
			break;
		case 'n':
			o->check = 1;
			break;
		case 'u':
			if (o->n_upstream >= CONF_MAX_UPSTREAM) {
				fprintf(stderr, "command line: more than %d "
				    "upstreams\n", CONF_MAX_UPSTREAM);
				exit(EXIT_CONFIG);
			}
			o->upstream[o->n_upstream++] = optarg;
			break;
		case 'v':
			o->verbose = 1;
			break;
		case 'V':
			printf("dotproxy %s\n", PACKAGE_VERSION);
			exit(0);
		case OPT_CA_FILE:
			o->ca_file = optarg;
			break;
		case OPT_HTTP_LISTEN:
			o->http_listen = optarg;
			break;
		case OPT_WORKERS:
			o->workers = optarg;
			break;
		case OPT_SHARED_CACHE:
			o->shared_cache = optarg;
			break;
		default:
			usage(stderr);
			exit(EXIT_CONFIG);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "dotproxy: unexpected argument \"%s\"\n",
		    argv[optind]);
		usage(stderr);
		exit(EXIT_CONFIG);
	}
}

/* File first (when present, or when named with -c), then the command line
 * on top: -l and -u replace the file's lists rather than add to them. */
static int
build_conf(const struct options *o, struct conf *c, char *err, size_t errlen)
{
	size_t i;

	conf_init(c);
	if (o->explicit_config || access(o->config_file, F_OK) == 0) {
		if (conf_load_file(c, o->config_file, err, errlen) != 0)
			return -1;
	}
	if (o->n_listen != 0)
		c->n_listen = 0;
	for (i = 0; i < o->n_listen; i++)
		if (conf_set(c, "listen", o->listen[i], "command line", err,
		    errlen) != 0)
			return -1;
	if (o->n_upstream != 0)
		c->n_upstream = 0;
	for (i = 0; i < o->n_upstream; i++)
		if (conf_set(c, "upstream", o->upstream[i], "command line",
		    err, errlen) != 0)
			return -1;
	if (o->ca_file != NULL &&
	    conf_set(c, "ca-file", o->ca_file, "command line", err,
	    errlen) != 0)
		return -1;
	if (o->http_listen != NULL &&
	    conf_set(c, "http-listen", o->http_listen, "command line", err,
	    errlen) != 0)
		return -1;
	if (o->workers != NULL &&
	    conf_set(c, "workers", o->workers, "command line", err,
	    errlen) != 0)
		return -1;
	if (o->shared_cache != NULL &&
	    conf_set(c, "shared-cache", o->shared_cache, "command line", err,
	    errlen) != 0)
		return -1;
	if (o->verbose)
		c->log_level = LOGL_DEBUG;
	return conf_finish(c, err, errlen);
}

/* SHA-256 of the config file's bytes as hex into out (65 bytes), "" when
 * it cannot be read: /status shows which file content is running. */
static void
file_sha256(const char *path, char *out)
{
	unsigned char digest[32];
	gnutls_hash_hd_t h;
	char buf[4096];
	ssize_t n;
	int fd, i;

	out[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) != 0) {
		close(fd);
		return;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		gnutls_hash(h, buf, (size_t)n);
	gnutls_hash_deinit(h, digest);
	close(fd);
	if (n < 0)
		return;
	for (i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static const char *
config_source(const struct options *o)
{
	return o->explicit_config || access(o->config_file, F_OK) == 0 ?
	    o->config_file : "";
}

/* ---- HTTP endpoints ---- */

static int
same_addr(const struct conf_addr *a, const struct conf_addr *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

/* The HTTP servers nc asks for, given what runs for oc (NULL: nothing
 * runs yet): the running server where its address did not change, a new
 * one bound beside the old where it did (so a failure leaves the old
 * untouched), NULL where nc has none. Returns 0, or -1 with the reason in
 * err and nothing new left open. The caller closes what it replaces. */
static int
http_prepare(struct server *s, const struct conf *oc, const struct conf *nc,
    struct http_server **http, struct http_server **control, char *err,
    size_t errlen)
{
	struct http_listen where;

	*http = oc != NULL ? s->http : NULL;
	*control = oc != NULL ? s->control : NULL;
	if (oc == NULL || !same_addr(&nc->http_listen, &oc->http_listen)) {
		*http = NULL;
		memset(&where, 0, sizeof(where));
		where.addr = &nc->http_listen;
		where.fd = -1;
		if (nc->http_listen.len != 0 && http_server_new(&s->loop, &where,
		    admin_public_routes, admin_n_public_routes, &s->admin, http,
		    err, errlen) != 0)
			return -1;
	}
	if (oc == NULL || strcmp(nc->control_socket, oc->control_socket) != 0) {
		*control = NULL;
		memset(&where, 0, sizeof(where));
		where.unix_path = nc->control_socket;
		where.fd = -1;
		if (nc->control_socket[0] != '\0' && http_server_new(&s->loop,
		    &where, admin_control_routes, admin_n_control_routes,
		    &s->admin, control, err, errlen) != 0) {
			if (*http != NULL && (oc == NULL || *http != s->http))
				http_server_close(*http);
			return -1;
		}
	}
	return 0;
}

/* Close srv unless it is keep (the one still in use). */
static void
http_drop(struct http_server *srv, struct http_server *keep)
{
	if (srv != NULL && srv != keep)
		http_server_close(srv);
}

/* The host's addresses or routes changed: what failed may work now. */
static void
network_changed_cb(void *arg, const struct netwatch_events *ev)
{
	struct server *s = arg;

	log_info("network changed (%u link, %u address, %u route events%s)",
	    ev->links, ev->addrs, ev->routes, ev->lost ? ", some lost" : "");
	workers_reset_backoff(s->workers);
}

/* ---- shutdown and drain ---- */

static void log_upstream_status(const struct workers_view *v);

/* SIGUSR1, and the last lines at exit: every worker's counters summed. */
static void
log_totals(struct server *s)
{
	struct workers_view *v = mem_alloc(sizeof(*v));

	if (v == NULL)
		return;
	workers_collect(s->workers, v);
	metrics_log(&v->metrics);
	log_upstream_status(v);
	mem_free(v);
}

static void
shutdown_server(struct server *s)
{
	if (s->stopping)
		return;
	s->stopping = 1;
	log_info("shutting down");
	log_totals(s);
	/* Every worker closes its upstreams first (each pending query gets
	 * its answer or SERVFAIL while the listeners can still send it),
	 * then its queries and listeners; their loops then end. */
	workers_stop(s->workers);
	netwatch_close(s->netwatch);
	s->netwatch = NULL;
	if (s->http != NULL)
		http_server_close(s->http);
	if (s->control != NULL)
		http_server_close(s->control);
	s->http = s->control = NULL;
	uv_close((uv_handle_t *)&s->sig_int, NULL);
	uv_close((uv_handle_t *)&s->sig_term, NULL);
	uv_close((uv_handle_t *)&s->sig_usr1, NULL);
	uv_close((uv_handle_t *)&s->sig_hup, NULL);
	uv_close((uv_handle_t *)&s->heartbeat, NULL);
	uv_close((uv_handle_t *)&s->drain_timer, NULL);
}

/* After lameduck: no new queries; wait until every client waiting for an
 * answer has it (the pool answers each by its deadline), then stop. */
static void
drain_wait_cb(uv_timer_t *t)
{
	struct server *s = t->data;
	size_t left = workers_waiting(s->workers);

	if (left != 0 && uv_now(&s->loop) < s->drain_deadline)
		return;
	if (left != 0)
		log_warn("drain: %zu queries still unanswered at the "
		    "deadline", left);
	uv_timer_stop(t);
	shutdown_server(s);
}

static void
lameduck_cb(uv_timer_t *t)
{
	struct server *s = t->data;

	workers_quiesce(s->workers);
	log_info("draining: listeners closed, %zu queries in flight",
	    workers_waiting(s->workers));
	s->drain_deadline = uv_now(&s->loop) + s->conf->query_timeout_ms +
	    1000;
	uv_timer_start(t, drain_wait_cb, 0, DRAIN_POLL_MS);
}

static void
start_drain(struct server *s)
{
	if (s->draining) {
		/* A second signal: stop waiting. */
		shutdown_server(s);
		return;
	}
	s->draining = 1;
	s->admin.phase = ADMIN_DRAINING;
	/* systemd: the stop has begun (its stop timeout, not the watchdog,
	 * bounds the drain from here on). */
	sysd_stopping();
	sysd_watchdog_close(&s->watchdog);
	log_info("draining: /ready says 503, DNS answered for %u ms more",
	    s->conf->lameduck_ms);
	uv_timer_start(&s->drain_timer, lameduck_cb, s->conf->lameduck_ms, 0);
}

/* The trust store of c, with "file:line: " before the reason when the
 * ca-file it names cannot be loaded: -n, the start and a reload refuse it
 * alike. */
static int
trust_new(const struct conf *c, struct tls_ctx **out, char *err,
    size_t errlen)
{
	char why[CONF_ERR_MAX];

	if (tls_ctx_new(c->ca_file, out, why, sizeof(why)) == 0)
		return 0;
	if (c->ca_file[0] != '\0' && c->ca_file_where[0] != '\0')
		snprintf(err, errlen, "%s: %s", c->ca_file_where, why);
	else
		snprintf(err, errlen, "%s", why);
	return -1;
}

/* ---- reload ---- */

static int
tls_for(struct server *s, const struct conf *nc, struct tls_ctx **out,
    char *err, size_t errlen)
{
	if (strcmp(nc->ca_file, s->conf->ca_file) == 0) {
		*out = s->tls;
		return 0;
	}
	return trust_new(nc, out, err, errlen);
}

/* Swap in a new configuration. Returns 0, or -1 with the reason in err
 * and the old configuration still running: every step that can fail
 * comes before the first that cannot be undone. */
static int
reload_conf(struct server *s, char *err, size_t errlen)
{
	struct http_server *http = NULL, *control = NULL;
	struct tls_ctx *tls = NULL;
	struct conf *nc, *old = s->conf;
	nc = mem_alloc(sizeof(*nc));
	if (nc == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (build_conf(s->opts, nc, err, errlen) != 0 ||
	    tls_for(s, nc, &tls, err, errlen) != 0)
		goto fail;
	if (http_prepare(s, old, nc, &http, &control, err, errlen) != 0)
		goto fail;
	/* Listeners on every worker first, then the pools: a worker
	 * failing either puts every worker back on old. */
	if (workers_reload(s->workers, old, s->tls, nc, tls, err,
	    errlen) != 0)
		goto fail_http;
	if (nc->workers != old->workers)
		log_warn("workers: the new count takes effect at the next "
		    "start; %u keep running", workers_count(s->workers));
	http_drop(s->http, http);
	http_drop(s->control, control);
	s->http = http;
	s->control = control;
	if (tls != s->tls) {
		/* The pool has closed every connection on the old trust
		 * store and uses the new one from now on. */
		tls_ctx_free(s->tls);
		s->tls = tls;
	}
	if (nc->cache_size != old->cache_size)
		cache_resize(s->cache, nc->cache_size);
	s->admin.conf = nc;
	s->conf = nc;
	log_set_level(nc->log_level);
	mem_free(old);
	return 0;

fail_http:
	http_drop(http, s->http);
	http_drop(control, s->control);
fail:
	if (tls != NULL && tls != s->tls)
		tls_ctx_free(tls);
	mem_free(nc);
	return -1;
}

/* The reload of SIGHUP and POST /reload: counted, logged, and the
 * reason kept for /status. */
static int
reload(void *arg, char *err, size_t errlen)
{
	struct server *s = arg;
	int rc;

	if (s->draining) {
		snprintf(err, errlen, "draining");
		return -1;
	}
	log_info("reloading %s", s->admin.config_file[0] != '\0' ?
	    s->admin.config_file : "the configuration");
	sysd_reloading();
	rc = reload_conf(s, err, errlen);
	sysd_ready();
	if (rc != 0) {
		s->admin.reloads_failed++;
		s->admin.last_reload_ok = 0;
		snprintf(s->admin.last_reload_error,
		    sizeof(s->admin.last_reload_error), "%s", err);
		log_err("reload refused, the old configuration keeps "
		    "running: %s", err);
		return -1;
	}
	s->admin.reloads_ok++;
	s->admin.last_reload_ok = 1;
	s->admin.last_reload_error[0] = '\0';
	file_sha256(s->admin.config_file, s->admin.config_hash);
	log_info("reloaded: %zu listen address(es), %zu upstream(s)",
	    s->conf->n_listen, s->conf->n_upstream);
	return 0;
}

/* One line per upstream: health, RTT, and its certificate's state. */
static void
log_upstream_status(const struct workers_view *v)
{
	const struct upstream_status *st;
	size_t i;

	for (i = 0; i < v->n_upstream; i++) {
		st = &v->up[i];
		log_info("upstream %s: %s, %s, srtt %u ms, %llu queries, "
		    "%llu answers, %llu timeouts, certificate %s, expires "
		    "%lld%s%s", st->name, st->healthy ? "up" : "down",
		    st->connected ? "connected" : "not connected", st->srtt_ms,
		    (unsigned long long)st->queries,
		    (unsigned long long)st->answers,
		    (unsigned long long)st->timeouts,
		    st->verified == 1 ? "verified" : st->verified == 0 ?
		    "NOT verified" : "not seen yet", (long long)st->cert_expiry,
		    st->last_error[0] ? ", last error: " : "", st->last_error);
	}
}

static void
signal_cb(uv_signal_t *h, int signum)
{
	struct server *s = h->data;
	char err[CONF_ERR_MAX];

	switch (signum) {
	case SIGUSR1:
		log_totals(s);
		break;
	case SIGHUP:
		(void)reload(s, err, sizeof(err));
		break;
	default:
		start_drain(s);
		break;
	}
}

/* The watchdog's question: has every worker's loop turned lately? */
static int
workers_alive(void *arg)
{
	struct server *s = arg;
	uint64_t now, beat;

	uv_update_time(&s->loop);
	now = uv_now(&s->loop);
	beat = workers_oldest_beat(s->workers);
	return now <= beat || now - beat <= ADMIN_HEARTBEAT_MAX_MS;
}

static void
heartbeat_cb(uv_timer_t *t)
{
	struct server *s = t->data;

	s->admin.heartbeat_ms = uv_now(&s->loop);
}

static void
log_upstreams(const struct conf *c)
{
	char addr[64];
	size_t i;

	for (i = 0; i < c->n_upstream; i++) {
		conf_addr_str(&c->upstream[i].addr, addr, sizeof(addr));
		log_info("upstream %s, certificate name %s", addr,
		    c->upstream[i].auth_name);
	}
}

static int
start_signal(struct server *s, uv_signal_t *h, int signum)
{
	uv_signal_init(&s->loop, h);
	h->data = s;
	return uv_signal_start(h, signal_cb, signum);
}

/* Client connections need descriptors: take every one the hard limit
 * allows (the listeners clamp tcp-max-clients to what that gives). */
static void
raise_nofile(void)
{
	struct rlimit rl;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		log_warn("setrlimit RLIMIT_NOFILE: %s", strerror(errno));
	else
		log_debug("open-file limit raised from %llu to %llu",
		    (unsigned long long)was, (unsigned long long)rl.rlim_cur);
}

/* What can be refused before anything is opened, so that the error is the
 * first thing logged: sockets handed over by systemd that no listen address
 * takes, and a user or group that does not exist. */
static int
check_system(const struct conf *c, struct sysd_fds *fds, struct privdrop *pd)
{
	char err[CONF_ERR_MAX];

	if (sysd_fds_init(fds, err, sizeof(err)) != 0 ||
	    sysd_fds_check_conf(fds, c, err, sizeof(err)) != 0 ||
	    privdrop_init(pd, c, err, sizeof(err)) != 0) {
		log_err("%s", err);
		return -1;
	}
	return 0;
}

static void
admin_init(struct server *s)
{
	struct admin *a = &s->admin;

	memset(a, 0, sizeof(*a));
	a->loop = &s->loop;
	a->conf = s->conf;
	a->config_file = config_source(s->opts);
	file_sha256(a->config_file, a->config_hash);
	a->cache = s->cache;
	a->workers = s->workers;
	a->phase = ADMIN_STARTING;
	a->phase_reason = "starting: binding listeners";
	a->start_time = (int64_t)time(NULL);
	a->last_reload_ok = 1;
	a->reload = reload;
	a->reload_arg = s;
	a->heartbeat_ms = uv_now(&s->loop);
}

/* workers N, or one per CPU this process may run on (its affinity mask,
 * which a container's cpuset narrows). */
static unsigned
worker_count(const struct conf *c)
{
	unsigned n = c->workers;

	if (n == 0)
		n = uv_available_parallelism();
	if (n < 1)
		n = 1;
	return n > WORKERS_MAX ? WORKERS_MAX : n;
}

static int
run(struct server *s)
{
	char err[CONF_ERR_MAX];
	struct sysd_fds fds;
	struct privdrop pd;
	unsigned n;
	int rc;

	if (check_system(s->conf, &fds, &pd) != 0)
		return 1;
	raise_nofile();
	if (trust_new(s->conf, &s->tls, err, sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	n = worker_count(s->conf);
	/* One shard serves one loop best; several loops take a lock per
	 * shard, so more shards than workers keep them apart. */
	s->cache = cache_new_shards(s->conf->cache_size,
	    s->conf->serve_stale ? s->conf->stale_max_age : 0,
	    n > 1 ? CACHE_SHARDS_PER_WORKER * n : 1);
	if (s->cache == NULL || uv_loop_init(&s->loop) != 0)
		fatal("out of memory");
	if (workers_new(&s->loop, n, s->conf, s->cache, s->tls,
	    &s->workers) != 0)
		fatal("out of memory");
	rc = netwatch_new(&s->loop, NETWATCH_DEBOUNCE_MS,
	    network_changed_cb, s, &s->netwatch);
	if (rc != 0)
		log_warn("netlink: %s; back-off is not reset on network "
		    "changes", strerror(-rc));
	admin_init(s);
	if (http_prepare(s, NULL, s->conf, &s->http, &s->control, err,
	    sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	if (workers_listen(s->workers, s->conf, &fds, err,
	    sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	/* Every worker has its own duplicate of a handed-over socket. */
	sysd_fds_close(&fds);
	/* The control socket stays usable by the user we become. */
	if (pd.enabled && s->conf->control_socket[0] != '\0' &&
	    chown(s->conf->control_socket, pd.uid, pd.gid) != 0)
		log_warn("control socket %s: chown: %s",
		    s->conf->control_socket, strerror(errno));
	/* Bound: from here on no privilege is needed. Before daemon(), so
	 * that a failure still gives the exit status. */
	if (privdrop_apply(&pd, err, sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	if (!s->opts->foreground) {
		if (daemon(0, 0) != 0)
			fatal("daemon: %s", strerror(errno));
		rc = uv_loop_fork(&s->loop);
		if (rc != 0)
			fatal("uv_loop_fork: %s", uv_strerror(rc));
	}
	/* Threads after daemon(), which keeps only the calling one. */
	rc = workers_start(s->workers);
	if (rc != 0)
		fatal("cannot start the workers: %s", uv_strerror(rc));
	if (start_signal(s, &s->sig_int, SIGINT) != 0 ||
	    start_signal(s, &s->sig_term, SIGTERM) != 0 ||
	    start_signal(s, &s->sig_usr1, SIGUSR1) != 0 ||
	    start_signal(s, &s->sig_hup, SIGHUP) != 0)
		fatal("cannot install signal handlers");
	uv_timer_init(&s->loop, &s->heartbeat);
	uv_timer_init(&s->loop, &s->drain_timer);
	s->heartbeat.data = s->drain_timer.data = s;
	uv_timer_start(&s->heartbeat, heartbeat_cb, HEARTBEAT_MS,
	    HEARTBEAT_MS);
	log_upstreams(s->conf);
	s->admin.phase = ADMIN_READY;
	log_info("ready: dotproxy %s serving %zu listen address(es) with %u "
	    "worker(s)", PACKAGE_VERSION, s->conf->n_listen, n);
	/* After daemon(): the watchdog is for this PID. */
	s->watchdog.alive = workers_alive;
	s->watchdog.alive_arg = s;
	rc = sysd_watchdog_start(&s->watchdog, &s->loop);
	if (rc != 0)
		fatal("systemd watchdog timer: %s", uv_strerror(rc));
	sysd_ready();
	uv_run(&s->loop, UV_RUN_DEFAULT);
	/* Anything still open (there should be nothing) is closed here so
	 * uv_loop_close can succeed. */
	loop_close_handles(&s->loop);
	/* Every worker's loop has ended too: join them. */
	workers_free(s->workers);
	s->workers = NULL;
	rc = uv_loop_close(&s->loop);
	if (rc != 0)
		log_warn("loop close: %s", uv_strerror(rc));
	cache_free(s->cache);
	tls_ctx_free(s->tls);
	log_info("stopped");
	return 0;
}

int
main(int argc, char **argv)
{
	struct options o;
	struct server *s;
	char err[CONF_ERR_MAX];
	int rc;

	parse_args(argc, argv, &o);
	s = calloc(1, sizeof(*s));
	if (s != NULL)
		s->conf = mem_calloc(1, sizeof(*s->conf));
	if (s == NULL || s->conf == NULL) {
		fprintf(stderr, "dotproxy: out of memory\n");
		return 1;
	}
	s->opts = &o;
	if (build_conf(&o, s->conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		rc = EXIT_CONFIG;
		goto out;
	}
	if (o.check) {
		/* A ca-file the start would refuse fails the check too. */
		if (s->conf->ca_file[0] != '\0') {
			if (trust_new(s->conf, &s->tls, err, sizeof(err)) != 0) {
				fprintf(stderr, "%s\n", err);
				rc = EXIT_CONFIG;
				goto out;
			}
			tls_ctx_free(s->tls);
			s->tls = NULL;
		}
		conf_print(s->conf, stdout);
		rc = 0;
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	log_open(s->conf->log_level, o.foreground);
	rc = run(s);
out:
	mem_free(s->conf);
	free(s);
	return rc;
}
