/* tls.h: a TLS client connection (GnuTLS) over a libuv TCP stream.
 *
 * Knows no DNS: it connects, handshakes, verifies the server's certificate
 * against an auth name and a trust store, then moves plaintext bytes both
 * ways. GnuTLS runs non-blocking with custom push/pull functions: pull reads
 * from what libuv has delivered (EAGAIN when empty), push hands ciphertext
 * to uv_write. There is no path that sends plaintext on the socket: bytes
 * given to tls_conn_write before the handshake has verified are refused.
 *
 * Callback contract (libuv's): tls_conn_new returning an error calls no
 * callback. Otherwise exactly one connected_cb follows. If its status is an
 * error, the connection is already gone and no other callback comes. If it
 * is 0, read_cb may come any number of times, then exactly one closed_cb,
 * after which the connection is gone. During a connected_cb that reports
 * an error the connection may still be given to the read-only getters
 * marked "also after a failure" (tls_conn_failure, the chain and pin
 * getters), so that the caller can count and show what went wrong; it is
 * freed after that callback returns. tls_conn_close() stops all callbacks
 * at once (none is called afterwards, not even closed_cb) and frees the
 * connection once libuv has closed the handle.
 */
#ifndef DOTPROXY_TLS_H
#define DOTPROXY_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

/* Status codes given to the callbacks (negative, distinct from errno). */
enum tls_status {
	TLS_OK = 0,
	TLS_E_CONNECT = -1000,   /* TCP connect failed (refused, unreachable) */
	TLS_E_TIMEOUT = -1001,   /* connect + handshake did not finish in time */
	TLS_E_HANDSHAKE = -1002, /* TLS protocol failure during the handshake */
	TLS_E_VERIFY = -1003,    /* the certificate did not verify */
	TLS_E_EOF = -1004,       /* the peer closed the connection */
	TLS_E_IO = -1005,        /* read/write error or TLS error after the handshake */
	TLS_E_NOMEM = -1006,
};

/* What an unsuccessful attempt failed at (tls_conn_failure). */
enum tls_failure {
	TLS_FAIL_NONE = 0,
	TLS_FAIL_CONNECT,   /* TCP: refused, unreachable, timeout before TLS */
	TLS_FAIL_HANDSHAKE, /* TLS protocol error or timeout in the handshake */
	TLS_FAIL_VERIFY,    /* chain not trusted, name mismatch, expired, ... */
	TLS_FAIL_PIN,       /* chain fine (or not checked), no pin matched */
};

/* Shared credentials: the trust store and the priority string. */
struct tls_ctx;

/* Load trust anchors from ca_file, or the system trust store when ca_file
 * is NULL or "". Returns 0 and *out, or -1 with a message in err (e.g. the
 * file is missing or holds no certificate). */
int tls_ctx_new(const char *ca_file, struct tls_ctx **out, char *err,
    size_t errlen);
/* Free the credentials; every connection using them must be closed. */
void tls_ctx_free(struct tls_ctx *ctx);

struct tls_conn;

struct tls_conn_cbs {
	/* Handshake finished (status 0: the certificate verified for the
	 * auth name and/or matched a pin, also on a resumed session) or the
	 * attempt failed (status < 0). why is a human text for
	 * the log on failure, e.g. "certificate name mismatch: expected
	 * dns.example", "unknown CA", "certificate expired", "connection
	 * refused", "handshake timeout"; NULL on success. */
	void (*connected_cb)(void *arg, int status, const char *why);
	/* Decrypted bytes, in whatever chunks they arrive. Valid during the
	 * call only. The callee may call tls_conn_close() from here. */
	void (*read_cb)(void *arg, const uint8_t *data, size_t len);
	/* The established connection ended (peer closed, reset, error). */
	void (*closed_cb)(void *arg, int status, const char *why);
};

/* Who the server must prove to be, and what we remember of it. */
struct tls_peer {
	/* Name the certificate must be valid for (also sent as SNI); ""
	 * when pins alone authenticate. */
	const char *auth_name;
	/* SHA-256 of the SubjectPublicKeyInfo of any certificate in the
	 * presented chain must equal one of these (RFC 7858 4.2). */
	const unsigned char (*pins)[32];
	size_t n_pins;
	/* Session data of an earlier connection to the same server for
	 * resumption (tls_conn_get_session), or NULL. Copied. */
	const uint8_t *session;
	size_t session_len;
};

/* Start connecting to addr and handshaking with peer (auth_name and pins
 * may not both be empty). Verification: with auth_name, the chain must be
 * trusted and valid for it; with pins, one pin must match; with both, both
 * must hold ("pin mismatch" names that failure). timeout_ms bounds
 * connect and handshake together (0: none). The callbacks get arg.
 * Returns 0 and *out, or a negative error (TLS_E_NOMEM, TLS_E_CONNECT)
 * with no callback to come. */
int tls_conn_new(uv_loop_t *loop, struct tls_ctx *ctx,
    const struct sockaddr *addr, const struct tls_peer *peer,
    unsigned timeout_ms, const struct tls_conn_cbs *cbs, void *arg,
    struct tls_conn **out);

/* After connected_cb(0): the session data to resume with next time, in a
 * mem_alloc'd buffer the caller frees. TLS 1.3 tickets arrive after the
 * handshake, so call it once data has been read. Returns 0, or -1 when
 * there is none (yet). */
int tls_conn_get_session(struct tls_conn *c, uint8_t **data, size_t *len);

/* After connected_cb(0): 1 when the handshake resumed a session. */
int tls_conn_resumed(const struct tls_conn *c);

/* After connected_cb(0): notAfter of the server's certificate (seconds
 * since the epoch), or 0 when unknown. */
int64_t tls_conn_cert_expiry(const struct tls_conn *c);

/* After connected_cb(0): the protocol version, e.g. "TLS1.3"; "" before.
 * A static string. */
const char *tls_conn_version(const struct tls_conn *c);

/* Also after a failure: the earliest notAfter (seconds since the epoch)
 * of all certificates the server presented (or, resumed, that are stored
 * with the session), 0 when no chain was seen or none parsed. */
int64_t tls_conn_chain_min_not_after(const struct tls_conn *c);

/* Also after a failure: the pin of the presented leaf, the base64 of the
 * SHA-256 of its DER SubjectPublicKeyInfo (RFC 7469, as in pin-sha256=),
 * 44 characters, into buf. Returns 0, or -1 (buf "") when no chain was
 * seen or cap is below 45. */
int tls_conn_leaf_pin(const struct tls_conn *c, char *buf, size_t cap);

/* Also after a failure: 1 when a pin matched a certificate of the chain,
 * 0 when none did (or no chain was seen yet), -1 when there are no pins. */
int tls_conn_pin_state(const struct tls_conn *c);

/* During a connected_cb with an error: what failed (TLS_FAIL_NONE
 * otherwise). Distinguishes a connect timeout from a handshake timeout,
 * both TLS_E_TIMEOUT, and a pin mismatch from other TLS_E_VERIFY causes. */
enum tls_failure tls_conn_failure(const struct tls_conn *c);

/* Encrypt and queue len bytes (copied). Only after a successful
 * connected_cb. Writes made during one loop turn are corked and sent
 * together, in as few TLS records as fit, when that turn's I/O is done
 * (a uv_check handle): no added latency, far fewer records and segments.
 * Returns 0, or a negative tls_status (the connection will report
 * closed_cb soon after an I/O error). */
int tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len);

/* Bytes accepted by tls_conn_write that the kernel has not taken yet:
 * lets the caller hold back instead of queueing without bound. */
size_t tls_conn_write_queue_size(const struct tls_conn *c);

/* Close now: no callback is called from here on. Sends close_notify when
 * the handshake had finished. The memory goes after libuv's close_cb. */
void tls_conn_close(struct tls_conn *c);

/* A short description of the session for the log once connected, e.g.
 * "TLS1.3 AES-256-GCM": protocol and cipher. */
const char *tls_conn_describe(struct tls_conn *c, char *buf, size_t cap);

#endif
