/* conf.h: dotproxy's configuration as an immutable value.
 *
 * Text (a config file, or command-line options that use the same setters)
 * becomes a struct conf; nothing here opens a socket. Every error names its
 * place as "file:line: message" (or "command line: message"). After
 * conf_finish() the value is complete and is not changed again: a reload
 * will build a new one and swap it.
 *
 * File syntax: one "key value" per line, '#' starts a comment, blank lines
 * are ignored. The keys are listed in dotproxy.conf(5) and printed back
 * by conf_print in a fixed order; listen and upstream may repeat, and an
 * upstream line may carry pin-sha256=BASE64 words after the address.
 */
#ifndef DOTPROXY_CONF_H
#define DOTPROXY_CONF_H

#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONF_MAX_LISTEN 32
#define CONF_MAX_UPSTREAM 16
#define CONF_MAX_PINS 4
#define CONF_MAX_PATH 1024
#define CONF_ERR_MAX 512
#define CONF_MAX_NAME 256   /* a user or group name, with its NUL */
#define CONF_MAX_TEXT 256   /* a TXT character-string, with its NUL */
#define CONF_MAX_ACL 256    /* access-control lines */

#define CONF_DEFAULT_FILE SYSCONFDIR "/dotproxy.conf"
#define CONF_DEFAULT_LISTEN_PORT 53
#define CONF_DEFAULT_UPSTREAM_PORT 853
#define CONF_DEFAULT_HTTP_PORT 9253  /* what node-local-dns users scrape */

struct conf_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

struct conf_upstream {
	struct conf_addr addr;
	char auth_name[256];       /* name the certificate must carry; "" = none given */
	/* SPKI pins (RFC 7858 4.2): SHA-256 of the SubjectPublicKeyInfo of
	 * any certificate in the server's chain. With pins and no name the
	 * pin alone authenticates; with both, both must hold. */
	unsigned char pins[CONF_MAX_PINS][32];
	size_t n_pins;
};

/* What access-control does with a client (acl.h matches them). */
enum conf_acl_action {
	CONF_ACL_ALLOW = 0,
	CONF_ACL_REFUSE,        /* answer REFUSED */
	CONF_ACL_DENY,          /* drop silently */
};

/* One access-control rule: a prefix in the IPv6 address space, IPv4
 * prefixes as their IPv4-mapped form (::ffff:0:0/96 plus the IPv4 prefix
 * length), so that one comparison serves both families and an
 * IPv4-mapped client address matches the IPv4 rules. Bits past plen are
 * zero. */
struct conf_acl {
	unsigned char addr[16];
	unsigned char plen;     /* 0..128 */
	unsigned char action;   /* enum conf_acl_action */
};

/* The shared cache's server (shared-cache): redis://IP[:port][/db] or
 * unix:/path[?db=N]. An IP literal, not a host name: the server of a DNS
 * forwarder's cache cannot wait for that forwarder to resolve its name. */
#define CONF_SHC_DEFAULT_PORT 6379
#define CONF_SHC_PREFIX_MAX 64
struct conf_redis {
	int set;                  /* 0: no shared cache (the default) */
	int is_unix;
	char host[64];            /* the IP literal, as hiredis takes it */
	unsigned port;
	unsigned db;              /* SELECT db after connecting; 0: none */
	char path[CONF_MAX_PATH]; /* is_unix */
	char url[CONF_MAX_PATH + 32]; /* as given, for logs and /status */
};

/* How the healthy upstream for a query is chosen. */
enum conf_selection {
	CONF_SELECT_FASTEST = 0,   /* lowest smoothed RTT, spread when close */
	CONF_SELECT_ROUND_ROBIN,
	CONF_SELECT_ORDERED,       /* first healthy in config order */
};

struct conf {
	struct conf_addr listen[CONF_MAX_LISTEN];
	size_t n_listen;
	/* The listen list is conf_finish's default, not the user's: an
	 * address the host lacks (::1 without IPv6) is then skipped with a
	 * warning instead of stopping the start. */
	int listen_is_default;
	struct conf_upstream upstream[CONF_MAX_UPSTREAM];
	size_t n_upstream;
	char ca_file[CONF_MAX_PATH];  /* "" = the system trust store */
	char ca_file_where[CONF_MAX_PATH + 32]; /* "file:line" that set it */
	size_t cache_size;            /* bytes; default 32 MiB */
	unsigned query_timeout_ms;    /* client deadline; default 3000 */
	unsigned connect_timeout_ms;  /* TCP connect + TLS handshake; default 2000 */
	unsigned idle_timeout_ms;     /* idle upstream connection closes; default 30000 */
	unsigned tcp_idle_timeout_ms; /* idle client TCP connection closes; default 10000 */
	unsigned tcp_max_clients;     /* client TCP connections at once; default 256 */
	unsigned max_udp_size;        /* UDP answer payload cap and the size our
	                               * OPT advertises (RFC 9715); default 1232 */
	int log_level;                /* enum log_level; default LOGL_INFO */

	/* upstream health */
	enum conf_selection selection;  /* upstream-selection; default fastest */
	unsigned answer_timeout_ms;   /* an upstream that has not answered a
	                               * query in this long is failing it: the
	                               * query moves on, the connection is
	                               * suspected half-open; default 1500 */
	unsigned backoff_max_ms;      /* cap of the re-probe back-off; default 30000 */
	unsigned max_conn_lifetime_ms; /* replace a connection after this long,
	                                * with a fresh verified handshake;
	                                * default 3600000 (1 h) */

	/* cache policy */
	unsigned cache_min_ttl;       /* seconds; default 0 */
	unsigned cache_max_ttl;       /* seconds; default 86400 */
	unsigned cache_max_negative_ttl; /* seconds; default 3600 */
	unsigned cache_servfail_ttl;  /* seconds SERVFAIL is cached; 0 = never; default 5 */
	int prefetch;                 /* refresh popular entries in the last 10 % of their TTL; default 1 */
	int serve_stale;              /* RFC 8767; default 1 */
	unsigned stale_max_age;       /* seconds past expiry a stale answer may be served; default 86400 */
	unsigned stale_client_timeout_ms; /* answer stale after this long without an upstream answer; default 1800 */
	unsigned stale_refresh_interval; /* seconds between refresh attempts of a stale entry; default 30 */
	int local_zones;              /* answer RFC 6761/6303 names locally; default 1 */

	/* operations */
	struct conf_addr http_listen; /* /metrics, /health, /ready, /status; len 0 = off */
	char control_socket[CONF_MAX_PATH]; /* HTTP on a unix socket, cache control; "" = off */
	unsigned lameduck_ms;         /* answer DNS this long after SIGTERM while /ready says 503; default 5000 */
	int log_queries;              /* one log line per answered query; default 0 */
	/* privileges: once the listeners are bound, run as this user and
	 * group with no capability (privdrop.h) */
	char user[CONF_MAX_NAME];     /* "" = keep running as started */
	char group[CONF_MAX_NAME];    /* "" = the user's primary group */

	/* defences (issue 7) */
	unsigned workers;             /* event loops serving DNS; 0: one per
	                               * CPU; read at start only */
	unsigned max_pending;         /* clients waiting for an upstream, and
	                               * upstream queries in flight, each at
	                               * most this many; default 10000 */
	size_t max_pending_bytes;     /* memory those may take; default 32M */
	unsigned ratelimit_per_client; /* queries/s per client address
	                                * (/32, /64); 0 = off (default) */
	/* access-control lines in file order; acl.c's defaults lie beneath */
	struct conf_acl acl[CONF_MAX_ACL];
	size_t n_acl;

	/* CHAOS class (local.c): what CH TXT id.server and hostname.bind,
	 * and version.bind and version.server, answer; "" = REFUSED, the
	 * default, as Unbound's hide-identity and hide-version */
	char identity[CONF_MAX_TEXT];
	char version[CONF_MAX_TEXT];

	/* shared cache (issue 10, shcache.h) */
	struct conf_redis shared_cache;
	unsigned shared_cache_timeout_ms; /* each request; default 20 */
	char shared_cache_prefix[CONF_SHC_PREFIX_MAX + 1]; /* default "dotproxy:" */
	size_t shared_cache_prefix_len;
};

/* Fill every setting with its default and empty the listen and upstream
 * lists (conf_finish fills those if still empty). */
void conf_init(struct conf *c);

/* Apply one "key value" setting. where is the place used in the error
 * ("file:line" or "command line"). Returns 0, or -1 with "where: message"
 * in err. "listen" and "upstream" append. */
int conf_set(struct conf *c, const char *key, const char *value,
    const char *where, char *err, size_t errlen);

/* Read a file of settings on top of c. Returns 0; -1 with
 * "path:line: message" in err on the first bad line; or -1 with
 * "path: strerror" when it cannot be read. */
int conf_load_file(struct conf *c, const char *path, char *err, size_t errlen);

/* Parse "addr[@port]" (IPv4 or IPv6, no brackets needed: "::1@53") into a.
 * Returns 0 or -1 with a message in err (without a place prefix). */
int conf_parse_addr(const char *s, unsigned default_port,
    struct conf_addr *a, char *err, size_t errlen);

/* Parse "addr[@port][#name] [pin-sha256=BASE64]..." into u. Returns 0 or
 * -1 as above. */
int conf_parse_upstream(const char *s, struct conf_upstream *u, char *err,
    size_t errlen);

/* Fill in the defaults for what is still empty: listen 127.0.0.1@53 and
 * ::1@53; upstreams 1.1.1.1@853 and 1.0.0.1@853, both #cloudflare-dns.com.
 * Returns 0, or -1 with "configuration: message" when the result is
 * unusable: an upstream with neither a name nor a pin (verification is
 * always on), cache-min-ttl above cache-max-ttl, or a group without a
 * user. */
int conf_finish(struct conf *c, char *err, size_t errlen);

/* Write c as a config file that conf_load_file would read back to the same
 * value, one setting per line, in a fixed order (the -n output). */
void conf_print(const struct conf *c, FILE *out);

/* Format an address as "addr@port" into buf (at least 64 bytes). */
void conf_addr_str(const struct conf_addr *a, char *buf, size_t cap);

#endif
