/* conf.h: dotproxy's configuration as an immutable value.
 *
 * Text (a config file, or command-line options that use the same setters)
 * becomes a struct conf; nothing here opens a socket. Every error names its
 * place as "file:line: message" (or "command line: message"). After
 * conf_finish() the value is complete and is not changed again: a reload
 * will build a new one and swap it.
 *
 * File syntax: one "key value" per line, '#' starts a comment, blank lines
 * are ignored. Keys: listen, upstream, ca-file, cache-size, query-timeout,
 * connect-timeout, idle-timeout, tcp-idle-timeout, tcp-max-clients,
 * log-level. listen and upstream may repeat.
 */
#ifndef DOTPROXY_CONF_H
#define DOTPROXY_CONF_H

#include <stddef.h>
#include <stdio.h>
#include <sys/socket.h>

#define CONF_MAX_LISTEN 32
#define CONF_MAX_UPSTREAM 16
#define CONF_MAX_PATH 1024
#define CONF_ERR_MAX 512

#define CONF_DEFAULT_FILE SYSCONFDIR "/dotproxy.conf"
#define CONF_DEFAULT_LISTEN_PORT 53
#define CONF_DEFAULT_UPSTREAM_PORT 853

struct conf_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

struct conf_upstream {
	struct conf_addr addr;
	char auth_name[256];       /* name the certificate must carry; "" = none given */
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
	size_t cache_size;            /* bytes; default 32 MiB */
	unsigned query_timeout_ms;    /* client deadline; default 3000 */
	unsigned connect_timeout_ms;  /* TCP connect + TLS handshake; default 2000 */
	unsigned idle_timeout_ms;     /* idle upstream connection closes; default 30000 */
	unsigned tcp_idle_timeout_ms; /* idle client TCP connection closes; default 10000 */
	unsigned tcp_max_clients;     /* client TCP connections at once; default 256 */
	int log_level;                /* enum log_level; default LOGL_INFO */
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

/* Parse "addr[@port][#name]" into u. Returns 0 or -1 as above. */
int conf_parse_upstream(const char *s, struct conf_upstream *u, char *err,
    size_t errlen);

/* Fill in the defaults for what is still empty: listen 127.0.0.1@53 and
 * ::1@53; upstreams 1.1.1.1@853 and 1.0.0.1@853, both #cloudflare-dns.com.
 * Returns 0, or -1 with "where: message" when the result is unusable (an
 * upstream without an auth name: verification is always on). */
int conf_finish(struct conf *c, char *err, size_t errlen);

/* Write c as a config file that conf_load_file would read back to the same
 * value, one setting per line, in a fixed order (the -n output). */
void conf_print(const struct conf *c, FILE *out);

/* Format an address as "addr@port" into buf (at least 64 bytes). */
void conf_addr_str(const struct conf_addr *a, char *buf, size_t cap);

#endif
