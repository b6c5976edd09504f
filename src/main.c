/* main.c: command line, configuration check, and the wiring of every module.
 *
 * The only file that knows every module: it builds the configuration (file,
 * then command-line options on top), the loop, the cache, the upstream pool
 * and the listeners, passes them down explicitly, runs the loop, and tears
 * everything down in the reverse order of the data flow on SIGINT/SIGTERM
 * (upstreams first, so every pending query still gets its answer, then the
 * listeners).
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "cache.h"
#include "conf.h"
#include "listen.h"
#include "log.h"
#include "metrics.h"
#include "privdrop.h"
#include "query.h"
#include "sysd.h"
#include "tls.h"
#include "upstream.h"

#define EXIT_CONFIG 2

enum { OPT_CA_FILE = 256 };

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
	const char *listen[CONF_MAX_LISTEN + 1];
	size_t n_listen;
	const char *upstream[CONF_MAX_UPSTREAM + 1];
	size_t n_upstream;
};

/* The running program: built in main(), torn down in shutdown_cb. */
struct server {
	uv_loop_t loop;
	struct conf conf;
	struct metrics metrics;
	struct tls_ctx *tls;
	struct cache *cache;
	struct upstream_pool *pool;
	struct query_ctx qctx;
	struct listen *listen;
	uv_signal_t sig_int, sig_term, sig_usr1;
	struct sysd_watchdog watchdog;
	int stopping;
};

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: dotproxy [-dhnvV] [-c file] [-l addr[@port]]... "
	    "[-u addr[@port][#name]]...\n"
	    "                [--ca-file file]\n"
	    "\n"
	    "A caching DNS forwarder: plain DNS in over UDP and TCP, cache "
	    "misses out\nover DNS-over-TLS with the certificate always "
	    "verified.\n"
	    "\n"
	    "  -c, --config file     configuration file (default %s,\n"
	    "                        read when present)\n"
	    "  -d, --debug           stay in the foreground, log to stderr\n"
	    "  -h, --help            show this help and exit\n"
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
	    "  -v, --verbose         log at debug level\n"
	    "  -V, --version         print the version and exit\n"
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
	if (o->verbose)
		c->log_level = LOGL_DEBUG;
	return conf_finish(c, err, errlen);
}

static void
close_walk_cb(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void
shutdown_server(struct server *s)
{
	if (s->stopping)
		return;
	s->stopping = 1;
	log_info("shutting down");
	sysd_stopping();
	sysd_watchdog_close(&s->watchdog);
	/* Upstreams first: each pending query gets its SERVFAIL while the
	 * listeners can still send it. */
	upstream_pool_close(s->pool);
	query_ctx_close(&s->qctx);
	listen_close(s->listen);
	uv_close((uv_handle_t *)&s->sig_int, NULL);
	uv_close((uv_handle_t *)&s->sig_term, NULL);
	uv_close((uv_handle_t *)&s->sig_usr1, NULL);
}

/* One line per upstream: health, RTT, and its certificate's state. */
static void
log_upstream_status(const struct upstream_pool *pool)
{
	struct upstream_status st;
	size_t i, n = upstream_count(pool);

	for (i = 0; i < n; i++) {
		upstream_get_status(pool, i, &st);
		log_info("upstream %s: %s, %s, srtt %u ms, %llu queries, "
		    "%llu answers, %llu timeouts, certificate %s, expires "
		    "%lld%s%s", st.name, st.healthy ? "up" : "down",
		    st.connected ? "connected" : "not connected", st.srtt_ms,
		    (unsigned long long)st.queries,
		    (unsigned long long)st.answers,
		    (unsigned long long)st.timeouts,
		    st.verified == 1 ? "verified" : st.verified == 0 ?
		    "NOT verified" : "not seen yet", (long long)st.cert_expiry,
		    st.last_error[0] ? ", last error: " : "", st.last_error);
	}
}

static void
signal_cb(uv_signal_t *h, int signum)
{
	struct server *s = h->data;

	if (signum == SIGUSR1) {
		metrics_log(&s->metrics);
		log_upstream_status(s->pool);
		return;
	}
	shutdown_server(s);
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

static int
run(const struct options *o, struct server *s)
{
	char err[CONF_ERR_MAX];
	struct sysd_fds fds;
	struct privdrop pd;
	int rc;

	if (check_system(&s->conf, &fds, &pd) != 0)
		return 1;
	if (tls_ctx_new(s->conf.ca_file, &s->tls, err, sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	s->cache = cache_new(s->conf.cache_size,
	    s->conf.serve_stale ? s->conf.stale_max_age : 0);
	if (s->cache == NULL || uv_loop_init(&s->loop) != 0)
		fatal("out of memory");
	s->pool = upstream_pool_new(&s->loop, &s->conf, s->tls, &s->metrics);
	if (s->pool == NULL)
		fatal("out of memory");
	if (query_ctx_init(&s->qctx, &s->loop, &s->conf, s->cache, s->pool,
	    &s->metrics) != 0)
		fatal("cannot set up the query timer");
	if (listen_start(&s->loop, &s->conf, &fds, &s->qctx, &s->metrics,
	    &s->listen, err, sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	/* Bound: from here on no privilege is needed. Before daemon(), so
	 * that a failure still gives the exit status. */
	if (privdrop_apply(&pd, err, sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	if (!o->foreground) {
		if (daemon(0, 0) != 0)
			fatal("daemon: %s", strerror(errno));
		rc = uv_loop_fork(&s->loop);
		if (rc != 0)
			fatal("uv_loop_fork: %s", uv_strerror(rc));
	}
	if (start_signal(s, &s->sig_int, SIGINT) != 0 ||
	    start_signal(s, &s->sig_term, SIGTERM) != 0 ||
	    start_signal(s, &s->sig_usr1, SIGUSR1) != 0)
		fatal("cannot install signal handlers");
	log_upstreams(&s->conf);
	log_info("ready: dotproxy %s serving %zu listen address(es)",
	    PACKAGE_VERSION, s->conf.n_listen);
	/* After daemon(): the watchdog is for this PID. */
	rc = sysd_watchdog_start(&s->watchdog, &s->loop);
	if (rc != 0)
		fatal("systemd watchdog timer: %s", uv_strerror(rc));
	sysd_ready();
	uv_run(&s->loop, UV_RUN_DEFAULT);
	/* Anything still open (there should be nothing) is closed here so
	 * uv_loop_close can succeed. */
	uv_walk(&s->loop, close_walk_cb, NULL);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(&s->loop);
	if (rc != 0)
		log_warn("loop close: %s", uv_strerror(rc));
	metrics_log(&s->metrics);
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
	if (s == NULL) {
		fprintf(stderr, "dotproxy: out of memory\n");
		return 1;
	}
	if (build_conf(&o, &s->conf, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		free(s);
		return EXIT_CONFIG;
	}
	if (o.check) {
		conf_print(&s->conf, stdout);
		free(s);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	log_open(s->conf.log_level, o.foreground);
	rc = run(&o, s);
	free(s);
	return rc;
}
