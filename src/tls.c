/* tls.c: a GnuTLS client session over a libuv TCP stream.
 *
 * GnuTLS runs non-blocking with our own transport: libuv's read callback
 * appends ciphertext to an input buffer that the pull function serves
 * (EAGAIN when it is empty), and the push function copies each chunk of
 * ciphertext into one uv_write request and reports it sent at once, so a
 * GnuTLS call never sees EAGAIN on the way out. The handshake is driven on
 * connect and on every read. Our verify function (verify_cb) runs inside
 * the handshake and makes it fail on a bad certificate, so no application
 * byte is accepted or delivered before verification (the state only
 * becomes ESTABLISHED after it). It checks the chain and name when there
 * is an auth name, and the SPKI pins (RFC 7858 4.2) when there are pins;
 * with pins alone the chain is not checked at all, as in stubby: the pin
 * is the trust anchor. A resumed session shows no certificate (GnuTLS
 * does not call verify_cb then); handshake_done runs the same checks on
 * the chain stored in the session data instead.
 *
 * verify_peer also looks at the whole chain once (chain_inspect): the
 * leaf's SPKI pin, the earliest notAfter and whether a pin matched, for
 * the pin check and for the status getters. Those, and what a failed
 * attempt failed at (conn_fail classifies it: a timeout before the TCP
 * connect finished is a connect failure, a verification that failed on
 * the pins a pin failure), stay readable during a failing connected_cb,
 * since the memory goes only with the handles' close callbacks.
 *
 * Resumption: TLS 1.3 tickets arrive after the handshake, as records that
 * gnutls_record_recv consumes in recv_loop; tls_conn_get_session only
 * returns data once GnuTLS flags a ticket, because before that
 * gnutls_session_get_data2 would try to read one itself and could swallow
 * application records that we would then never deliver.
 *
 * Lifetime: a connection owns two handles (the TCP stream and one timer)
 * and is freed in the close callback of the last of them, never earlier.
 * Every path that ends the connection goes through conn_shutdown(), which
 * sets `closing`; all libuv callbacks and the delivery loops check that
 * flag after anything that may have called back into the user, because the
 * user may call tls_conn_close() from read_cb. libuv runs the callbacks of
 * cancelled write and connect requests (UV_ECANCELED) before the handle's
 * close callback, so those callbacks may still touch the connection; they
 * only free their own memory and never call the user once `closing` is set.
 *
 * The timer bounds connect + handshake; once established it is reused with
 * a zero timeout to report a write error from the next loop turn, so that
 * tls_conn_write never calls back into its caller.
 *
 * Writes to a peer that has gone away may raise SIGPIPE (libuv writes with
 * write(2)): the program must ignore SIGPIPE, as any libuv server does.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "log.h"
#include "mem.h"
#include "tls.h"

#define TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
/* Room offered to each uv read: one full TLS record plus its overhead. */
#define TLS_READ_CHUNK (16384 + 2048)
/* Plaintext buffer for gnutls_record_recv: one maximum record. */
#define TLS_PLAIN_CHUNK 16384
/* Consecutive GnuTLS calls without progress we tolerate before calling
 * the session broken; only reachable if GnuTLS misbehaves. */
#define TLS_MAX_SPIN 64
#define TLS_WHY_MAX 512

struct tls_ctx {
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
};

enum conn_state {
	ST_CONNECTING,
	ST_HANDSHAKING,
	ST_ESTABLISHED,
};

struct tls_conn {
	uv_loop_t *loop;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_check_t flush;  /* sends what was corked during this loop turn */
	/* Active while corked, so that a write made outside the poll phase
	 * (a timer callback) does not wait in a blocking poll for its flush:
	 * an active idle handle makes libuv poll without blocking. */
	uv_idle_t nudge;
	uv_connect_t connect_req;
	gnutls_session_t session;
	struct tls_conn_cbs cbs;
	void *arg;
	char *name;        /* auth name, or the address when pins alone */
	int has_name;      /* name is an auth name: verify chain and name */
	unsigned char (*pins)[32]; /* SHA-256 of acceptable SPKIs */
	size_t n_pins;
	int verified;      /* verify_cb accepted the certificate */
	unsigned verify_status; /* GnuTLS status bits when it did not */
	const char *verify_why; /* or a failure that has no status bit */
	const char *verify_detail; /* and its longer text */
	int64_t cert_expiry; /* notAfter of the leaf, 0 if unknown */
	/* What the last verification saw of the presented chain (the
	 * getters' answers; also readable after a failed handshake). */
	int chain_seen;    /* the fields below are filled */
	int64_t chain_min_not_after; /* earliest notAfter, 0 if unknown */
	int have_leaf_pin;
	unsigned char leaf_pin[32]; /* SHA-256 of the leaf's SPKI */
	int pin_state;     /* 1 a pin matched, 0 none did, -1 no pins */
	int pin_failed;    /* verification failed on the pins */
	enum tls_failure failure; /* what an unsuccessful attempt failed at */
	unsigned timeout_ms;
	enum conn_state state;
	int closing;       /* set once: no user callback from then on */
	int handles_open;  /* freed when this drops to 0 */
	int peer_eof;      /* libuv reported UV_EOF: pull returns 0 */
	int tls_broken;    /* a fatal TLS or I/O error: no close_notify */
	int corked;        /* writes of this loop turn wait for flush_cb */
	int pending_err;   /* write error to report from the timer */
	const char *pending_why; /* its text (GnuTLS's static string) */
	uint8_t *in;       /* ciphertext received, not yet pulled */
	size_t in_off, in_len, in_cap;
	size_t write_queued; /* ciphertext bytes handed to uv_write */
};

/* One uv_write with its ciphertext in the same allocation. */
struct write_req {
	uv_write_t req;
	struct tls_conn *conn;
	size_t len;
	uint8_t data[];
};

/* ---- credentials ---- */

int
tls_ctx_new(const char *ca_file, struct tls_ctx **out, char *err,
    size_t errlen)
{
	struct tls_ctx *ctx;
	const char *errpos = NULL;
	int ret;

	*out = NULL;
	ctx = mem_calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ret = gnutls_certificate_allocate_credentials(&ctx->cred);
	if (ret < 0) {
		snprintf(err, errlen, "gnutls credentials: %s",
		    gnutls_strerror(ret));
		ctx->cred = NULL;
		goto fail;
	}
	if (ca_file != NULL && ca_file[0] != '\0') {
		ret = gnutls_certificate_set_x509_trust_file(ctx->cred,
		    ca_file, GNUTLS_X509_FMT_PEM);
		if (ret == GNUTLS_E_FILE_ERROR && access(ca_file, R_OK) != 0) {
			/* errno says more than "Error while reading file". */
			snprintf(err, errlen, "ca-file %s: %s", ca_file,
			    strerror(errno));
			goto fail;
		}
		if (ret < 0) {
			snprintf(err, errlen, "ca-file %s: %s", ca_file,
			    gnutls_strerror(ret));
			goto fail;
		}
		if (ret == 0) {
			snprintf(err, errlen, "ca-file %s: no certificate found",
			    ca_file);
			goto fail;
		}
	} else {
		ret = gnutls_certificate_set_x509_system_trust(ctx->cred);
		if (ret < 0) {
			snprintf(err, errlen, "system trust store: %s",
			    gnutls_strerror(ret));
			goto fail;
		}
		/* An empty store would make every upstream fail to verify;
		 * say so once at startup instead of on every connection. */
		if (ret == 0) {
			snprintf(err, errlen, "system trust store: no "
			    "certificate found (install ca-certificates or "
			    "set a ca-file)");
			goto fail;
		}
	}
	ret = gnutls_priority_init(&ctx->prio, TLS_PRIORITY, &errpos);
	if (ret < 0) {
		snprintf(err, errlen, "tls priority: %s", gnutls_strerror(ret));
		ctx->prio = NULL;
		goto fail;
	}
	*out = ctx;
	return 0;

fail:
	tls_ctx_free(ctx);
	return -1;
}

void
tls_ctx_free(struct tls_ctx *ctx)
{
	if (ctx == NULL)
		return;
	if (ctx->prio != NULL)
		gnutls_priority_deinit(ctx->prio);
	if (ctx->cred != NULL)
		gnutls_certificate_free_credentials(ctx->cred);
	mem_free(ctx);
}

/* ---- teardown ---- */

static void
conn_free(struct tls_conn *c)
{
	if (c->session != NULL)
		gnutls_deinit(c->session);
	mem_free(c->in);
	mem_free(c->name);
	mem_free(c->pins);
	mem_free(c);
}

static void
handle_close_cb(uv_handle_t *h)
{
	struct tls_conn *c = h->data;

	if (--c->handles_open == 0)
		conn_free(c);
}

/* Stop everything and hand both handles to libuv; the memory goes in the
 * last close callback. Idempotent. send_bye: try a close_notify first. */
static void
conn_shutdown(struct tls_conn *c, int send_bye)
{
	if (c->closing)
		return;
	c->closing = 1;
	uv_read_stop((uv_stream_t *)&c->tcp);
	uv_timer_stop(&c->timer);
	/* Best effort: push never blocks, so this queues the alert and
	 * returns; a pending write is flushed or cancelled by uv_close. */
	if (send_bye && c->state == ST_ESTABLISHED && !c->tls_broken) {
		if (c->corked)
			(void)gnutls_record_uncork(c->session, 0);
		(void)gnutls_bye(c->session, GNUTLS_SHUT_WR);
	}
	c->corked = 0;
	uv_close((uv_handle_t *)&c->tcp, handle_close_cb);
	uv_close((uv_handle_t *)&c->timer, handle_close_cb);
	uv_close((uv_handle_t *)&c->flush, handle_close_cb);
	uv_close((uv_handle_t *)&c->nudge, handle_close_cb);
}

/* The attempt failed: one connected_cb with the error, then gone. */
static void
conn_fail(struct tls_conn *c, int status, const char *why)
{
	if (c->closing)
		return;
	/* Shut down first so that a tls_conn_close() from the callback is a
	 * no-op; the memory stays until the close callbacks run. */
	c->tls_broken = 1;
	conn_shutdown(c, 0);
	switch (status) {
	case TLS_E_CONNECT:
		c->failure = TLS_FAIL_CONNECT;
		break;
	case TLS_E_TIMEOUT:
		/* Before the TCP connect completed, no TLS was spoken. */
		c->failure = c->state == ST_CONNECTING ? TLS_FAIL_CONNECT :
		    TLS_FAIL_HANDSHAKE;
		break;
	case TLS_E_VERIFY:
		c->failure = c->pin_failed ? TLS_FAIL_PIN : TLS_FAIL_VERIFY;
		break;
	default:
		c->failure = TLS_FAIL_HANDSHAKE;
		break;
	}
	log_debug("tls %s: %s", c->name, why);
	c->cbs.connected_cb(c->arg, status, why);
}

/* The established connection ended: one closed_cb, then gone. */
static void
conn_end(struct tls_conn *c, int status, const char *why)
{
	if (c->closing)
		return;
	c->tls_broken = 1;
	conn_shutdown(c, 0);
	log_debug("tls %s: closed: %s", c->name, why);
	if (c->cbs.closed_cb != NULL)
		c->cbs.closed_cb(c->arg, status, why);
}

/* A socket error: the right callback for the state we are in. */
static void
io_error(struct tls_conn *c, const char *op, int uverr)
{
	char why[TLS_WHY_MAX];

	c->tls_broken = 1;
	if (c->state == ST_ESTABLISHED) {
		snprintf(why, sizeof(why), "%s: %s", op, uv_strerror(uverr));
		conn_end(c, TLS_E_IO, why);
	} else {
		snprintf(why, sizeof(why), "handshake with %s: %s: %s",
		    c->name, op, uv_strerror(uverr));
		conn_fail(c, TLS_E_HANDSHAKE, why);
	}
}

/* ---- GnuTLS transport ---- */

static ssize_t
pull_fn(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
	struct tls_conn *c = ptr;
	size_t avail = c->in_len - c->in_off;

	if (avail == 0) {
		if (c->peer_eof)
			return 0;
		gnutls_transport_set_errno(c->session, EAGAIN);
		return -1;
	}
	if (len > avail)
		len = avail;
	memcpy(buf, c->in + c->in_off, len);
	c->in_off += len;
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	return (ssize_t)len;
}

/* GnuTLS asks this before some reads (TLS 1.3); the answer must not wait:
 * data (or EOF) is either buffered already or not. */
static int
pull_timeout_fn(gnutls_transport_ptr_t ptr, unsigned int ms)
{
	struct tls_conn *c = ptr;

	(void)ms;
	return (c->in_len > c->in_off || c->peer_eof) ? 1 : 0;
}

static void
write_cb(uv_write_t *req, int status)
{
	struct write_req *wr = (struct write_req *)req;
	struct tls_conn *c = wr->conn;

	c->write_queued -= wr->len;
	mem_free(wr);
	/* Includes UV_ECANCELED after uv_close: the user is gone. */
	if (status == 0 || c->closing)
		return;
	io_error(c, "write", status);
}

static ssize_t
vec_push_fn(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct tls_conn *c = ptr;
	struct write_req *wr;
	uv_buf_t buf;
	size_t total = 0, off = 0;
	int err = EIO, i, ret;

	for (i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (c->closing && c->tls_broken)
		goto fail;
	wr = mem_alloc(sizeof(*wr) + total);
	if (wr == NULL) {
		err = ENOMEM;
		goto fail;
	}
	for (i = 0; i < iovcnt; i++) {
		memcpy(wr->data + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	wr->conn = c;
	wr->len = total;
	buf = uv_buf_init((char *)wr->data, (unsigned)total);
	ret = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb);
	if (ret < 0) {
		/* Only on a stream that is not writable (closed socket); the
		 * error surfaces through the GnuTLS call that pushed. */
		mem_free(wr);
		goto fail;
	}
	c->write_queued += total;
	return (ssize_t)total;

fail:
	gnutls_transport_set_errno(c->session, err);
	return -1;
}

/* ---- handshake and verification ---- */

/* The reason word for the log, most fundamental problem first. */
static const char *
verify_reason(unsigned status)
{
	if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA))
		return "unknown CA / untrusted";
	if (status & GNUTLS_CERT_EXPIRED)
		return "certificate expired";
	if (status & GNUTLS_CERT_NOT_ACTIVATED)
		return "certificate not yet valid (is the clock set?)";
	if (status & GNUTLS_CERT_UNEXPECTED_OWNER)
		return "name mismatch";
	if (status & GNUTLS_CERT_REVOKED)
		return "certificate revoked";
	if (status & GNUTLS_CERT_INSECURE_ALGORITHM)
		return "insecure algorithm";
	if (status & GNUTLS_CERT_PURPOSE_MISMATCH)
		return "certificate purpose mismatch";
	return "untrusted";
}

/* Report a failed verification: status bits from GnuTLS, or (status 0)
 * our own reason and detail, e.g. a pin mismatch. */
static void
verify_failed(struct tls_conn *c, unsigned status, const char *reason,
    const char *detail)
{
	char why[TLS_WHY_MAX];
	gnutls_datum_t txt = { NULL, 0 };
	size_t len = 0;
	int ret;

	if (status != 0) {
		ret = gnutls_certificate_verification_status_print(status,
		    GNUTLS_CRT_X509, &txt, 0);
		if (ret == 0 && txt.data != NULL) {
			len = strlen((char *)txt.data);
			detail = (const char *)txt.data;
		}
		while (len > 0 && txt.data[len - 1] == ' ')
			len--; /* GnuTLS ends each sentence with a space */
		reason = verify_reason(status);
	} else {
		len = strlen(detail);
	}
	snprintf(why, sizeof(why),
	    "certificate verification failed for %s: %s (%.*s)", c->name,
	    reason, len > 0 ? (int)len : 1, len > 0 ? detail : "?");
	gnutls_free(txt.data);
	conn_fail(c, TLS_E_VERIFY, why);
}

/* SHA-256 of the DER SubjectPublicKeyInfo of one DER certificate: what
 * RFC 7469 and RFC 7858 4.2 pin. Returns 0, or -1 when it cannot be
 * parsed (such a certificate matches no pin). */
static int
spki_sha256(const gnutls_datum_t *der, unsigned char out[32])
{
	gnutls_x509_crt_t crt = NULL;
	gnutls_pubkey_t key = NULL;
	gnutls_datum_t spki = { NULL, 0 };
	int rc = -1;

	if (gnutls_x509_crt_init(&crt) < 0) {
		crt = NULL;
		goto out;
	}
	if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) < 0)
		goto out;
	if (gnutls_pubkey_init(&key) < 0) {
		key = NULL;
		goto out;
	}
	if (gnutls_pubkey_import_x509(key, crt, 0) < 0 ||
	    gnutls_pubkey_export2(key, GNUTLS_X509_FMT_DER, &spki) < 0)
		goto out;
	if (gnutls_hash_fast(GNUTLS_DIG_SHA256, spki.data, spki.size,
	    out) < 0)
		goto out;
	rc = 0;
out:
	gnutls_free(spki.data);
	if (key != NULL)
		gnutls_pubkey_deinit(key);
	if (crt != NULL)
		gnutls_x509_crt_deinit(crt);
	return rc;
}

/* notAfter of one DER certificate, 0 when it does not parse. */
static int64_t
cert_not_after(const gnutls_datum_t *der)
{
	gnutls_x509_crt_t crt;
	time_t t = (time_t)-1;

	if (gnutls_x509_crt_init(&crt) < 0)
		return 0;
	if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) == 0)
		t = gnutls_x509_crt_get_expiration_time(crt);
	gnutls_x509_crt_deinit(crt);
	return t == (time_t)-1 ? 0 : (int64_t)t;
}

/* Look at the whole presented chain once, for the pins and for the
 * status getters: the leaf's SPKI hash, the earliest notAfter, and
 * whether any certificate has a pinned key. All of the chain counts for
 * the pins, so a pin on an intermediate or a CA (a backup pin that
 * survives a leaf key rollover) works too. */
static void
chain_inspect(struct tls_conn *c, const gnutls_datum_t *certs, unsigned n)
{
	unsigned char hash[32];
	int64_t na;
	unsigned i;
	size_t j;

	c->chain_seen = 1;
	c->chain_min_not_after = 0;
	c->have_leaf_pin = 0;
	c->pin_state = c->n_pins > 0 ? 0 : -1;
	for (i = 0; i < n; i++) {
		na = cert_not_after(&certs[i]);
		if (na != 0 && (c->chain_min_not_after == 0 ||
		    na < c->chain_min_not_after))
			c->chain_min_not_after = na;
		if (spki_sha256(&certs[i], hash) != 0)
			continue;
		if (i == 0) {
			memcpy(c->leaf_pin, hash, sizeof(hash));
			c->have_leaf_pin = 1;
		}
		for (j = 0; j < c->n_pins; j++)
			if (memcmp(hash, c->pins[j], sizeof(hash)) == 0)
				c->pin_state = 1;
	}
}

/* Check the server's chain (as sent, or as stored with a resumed
 * session) against the name and the pins. Returns 0 and sets verified,
 * or a GnuTLS error with the reason in verify_status or verify_why. */
static int
verify_peer(struct tls_conn *c, gnutls_session_t session)
{
	const gnutls_datum_t *certs;
	unsigned n = 0, status = 0;
	int ret;

	c->verified = 0;
	c->verify_status = 0;
	c->verify_why = NULL;
	c->verify_detail = NULL;
	c->pin_failed = 0;
	certs = gnutls_certificate_get_peers(session, &n);
	if (certs == NULL || n == 0) {
		c->verify_why = "no certificate";
		c->verify_detail = "the server sent none";
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	}
	chain_inspect(c, certs, n);
	if (c->has_name) {
		ret = gnutls_certificate_verify_peers3(session, c->name,
		    &status);
		if (ret < 0) {
			c->verify_why = "untrusted";
			c->verify_detail = gnutls_strerror(ret);
			return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
		}
		if (status != 0) {
			c->verify_status = status;
			return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
		}
	}
	if (c->n_pins > 0 && c->pin_state != 1) {
		c->pin_failed = 1;
		c->verify_why = "pin mismatch";
		c->verify_detail = "no public key in the presented chain "
		    "matches a pin";
		return GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR;
	}
	c->verified = 1;
	return 0;
}

/* GnuTLS's verify function, run inside the handshake once the server's
 * certificate (and in TLS 1.3 its CertificateVerify) is in: a negative
 * return fails the handshake before any application data. It must not
 * call the user: it only records why, for handshake_step to report. */
static int
verify_cb(gnutls_session_t session)
{
	return verify_peer(gnutls_session_get_ptr(session), session);
}

/* notAfter of the leaf the server presented (or, resumed, the one stored
 * in the session), 0 when there is none or it does not parse. */
static int64_t
leaf_expiry(gnutls_session_t session)
{
	const gnutls_datum_t *certs;
	unsigned n = 0;

	certs = gnutls_certificate_get_peers(session, &n);
	if (certs == NULL || n == 0)
		return 0;
	return cert_not_after(&certs[0]);
}

static void recv_loop(struct tls_conn *c);

static void
handshake_done(struct tls_conn *c)
{
	char desc[64];

	/* verify_cb has accepted the certificate, or the session was
	 * resumed: no certificate is sent then, and GnuTLS skips verify_cb.
	 * The resumed session is held to the same checks against the chain
	 * stored with it, so that session data cannot carry a connection
	 * past a changed pin or name or a certificate that expired since.
	 * Refuse anyway if the handshake somehow finished unverified. */
	if (!c->verified && gnutls_session_is_resumed(c->session))
		(void)verify_peer(c, c->session);
	if (!c->verified) {
		verify_failed(c, c->verify_status,
		    c->verify_why != NULL ? c->verify_why : "untrusted",
		    c->verify_detail != NULL ? c->verify_detail :
		    "certificate not verified");
		return;
	}
	c->cert_expiry = leaf_expiry(c->session);
	uv_timer_stop(&c->timer);
	c->state = ST_ESTABLISHED;
	log_debug("tls %s: connected, %s%s", c->name,
	    tls_conn_describe(c, desc, sizeof(desc)),
	    gnutls_session_is_resumed(c->session) ? ", resumed" : "");
	c->cbs.connected_cb(c->arg, 0, NULL);
	/* Records that came with the last handshake flight (session tickets,
	 * early answers) are already buffered: deliver them now. */
	if (!c->closing)
		recv_loop(c);
}

static void
handshake_step(struct tls_conn *c)
{
	char why[TLS_WHY_MAX];
	int ret, spin;

	for (spin = 0; spin < TLS_MAX_SPIN; spin++) {
		ret = gnutls_handshake(c->session);
		if (ret == 0) {
			handshake_done(c);
			return;
		}
		if (ret == GNUTLS_E_AGAIN) {
			/* EAGAIN from the pull function (input drained) is
			 * the normal case; go on if GnuTLS stopped early. */
			if (c->in_len > c->in_off)
				continue;
			if (c->peer_eof)
				break; /* defensive: pull returns 0 then */
			return;
		}
		if (ret == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR ||
		    ret == GNUTLS_E_CERTIFICATE_ERROR) {
			verify_failed(c, c->verify_status,
			    c->verify_why != NULL ? c->verify_why :
			    "untrusted", c->verify_detail != NULL ?
			    c->verify_detail : gnutls_strerror(ret));
			return;
		}
		if (ret == GNUTLS_E_FATAL_ALERT_RECEIVED) {
			snprintf(why, sizeof(why), "handshake with %s: "
			    "server sent alert: %s", c->name,
			    gnutls_alert_get_name(gnutls_alert_get(c->session)));
			conn_fail(c, TLS_E_HANDSHAKE, why);
			return;
		}
		if (gnutls_error_is_fatal(ret)) {
			snprintf(why, sizeof(why), "handshake with %s: %s",
			    c->name, gnutls_strerror(ret));
			conn_fail(c, TLS_E_HANDSHAKE, why);
			return;
		}
		/* Non-fatal (interrupted, warning alert): go on. */
	}
	snprintf(why, sizeof(why), "handshake with %s: %s", c->name,
	    c->peer_eof ? "connection closed by peer" : "no progress");
	conn_fail(c, TLS_E_HANDSHAKE, why);
}

/* ---- established: decrypt and deliver ---- */

static void
recv_loop(struct tls_conn *c)
{
	uint8_t plain[TLS_PLAIN_CHUNK];
	char why[TLS_WHY_MAX];
	size_t before;
	ssize_t n;
	int spin = 0;

	while (!c->closing) {
		if (spin++ >= TLS_MAX_SPIN) {
			conn_end(c, TLS_E_IO, "tls: no progress");
			return;
		}
		before = c->in_len - c->in_off;
		n = gnutls_record_recv(c->session, plain, sizeof(plain));
		if (c->in_len - c->in_off != before)
			spin = 0; /* ciphertext consumed: progress */
		if (n > 0) {
			spin = 0;
			c->cbs.read_cb(c->arg, plain, (size_t)n);
			continue; /* the loop condition sees a close */
		}
		if (n == 0) {
			conn_end(c, TLS_E_EOF, "peer closed the TLS session");
			return;
		}
		if (n == GNUTLS_E_AGAIN) {
			/* A post-handshake message (TLS 1.3 session ticket,
			 * key update) also ends in EAGAIN, after one message
			 * and with more records possibly still buffered:
			 * only an empty input means "wait for the socket". */
			if (c->in_len > c->in_off ||
			    gnutls_record_check_pending(c->session) > 0)
				continue;
			if (c->peer_eof)
				conn_end(c, TLS_E_EOF, "peer closed the connection");
			return;
		}
		if (n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n == GNUTLS_E_REHANDSHAKE) {
			/* TLS 1.2 HelloRequest: we keep the session we
			 * verified; refusing is allowed (RFC 5246 7.4.1.1). */
			(void)gnutls_alert_send(c->session, GNUTLS_AL_WARNING,
			    GNUTLS_A_NO_RENEGOTIATION);
			continue;
		}
		if (n == GNUTLS_E_PREMATURE_TERMINATION && c->peer_eof) {
			/* TCP FIN without close_notify: common and harmless
			 * for DNS, whose messages carry their own length. */
			conn_end(c, TLS_E_EOF, "peer closed the connection");
			return;
		}
		if (!gnutls_error_is_fatal((int)n))
			continue; /* e.g. a warning alert */
		snprintf(why, sizeof(why), "tls: %s", gnutls_strerror((int)n));
		conn_end(c, TLS_E_IO, why);
		return;
	}
}

/* ---- libuv callbacks ---- */

static void
alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct tls_conn *c = h->data;
	size_t pending = c->in_len - c->in_off;
	size_t need;
	uint8_t *p;

	(void)suggested;
	/* Keep unpulled bytes (a partial record) at the front, then offer a
	 * fixed chunk after them: the buffer stays about one record big. */
	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, pending);
		c->in_off = 0;
		c->in_len = pending;
	}
	need = pending + TLS_READ_CHUNK;
	if (c->in_cap < need) {
		p = mem_realloc(c->in, need);
		if (p == NULL) {
			*buf = uv_buf_init(NULL, 0); /* read_cb gets ENOBUFS */
			return;
		}
		c->in = p;
		c->in_cap = need;
	}
	*buf = uv_buf_init((char *)c->in + c->in_len,
	    (unsigned)(c->in_cap - c->in_len));
}

/* Acknowledge at once what we just read. A DNS server that writes each
 * answer as its own small segment without TCP_NODELAY (Unbound does) holds
 * the next answer until our ACK, and Linux delays that ACK up to 40 ms when
 * we have nothing to send back: a 40 ms stall on a pipelined connection.
 * TCP_QUICKACK is not sticky, so it is set again after every read. */
static void
quickack(struct tls_conn *c)
{
#ifdef TCP_QUICKACK
	uv_os_fd_t fd;
	int one = 1;

	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one,
		    sizeof(one));
#else
	(void)c;
#endif
}

static void
read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct tls_conn *c = s->data;

	(void)buf;
	if (c->closing)
		return;
	if (nread == 0)
		return; /* EAGAIN from libuv */
	if (nread == UV_EOF) {
		c->peer_eof = 1;
		uv_read_stop(s);
	} else if (nread < 0) {
		io_error(c, "read", (int)nread);
		return;
	} else {
		c->in_len += (size_t)nread;
		quickack(c);
	}
	if (c->state == ST_HANDSHAKING)
		handshake_step(c);
	else if (c->state == ST_ESTABLISHED)
		recv_loop(c);
}

static void
connect_cb(uv_connect_t *req, int status)
{
	struct tls_conn *c = req->data;
	char why[TLS_WHY_MAX];
	int ret;

	/* UV_ECANCELED after tls_conn_close(): nothing to report. */
	if (c->closing)
		return;
	if (status < 0) {
		snprintf(why, sizeof(why), "connect: %s", uv_strerror(status));
		conn_fail(c, TLS_E_CONNECT, why);
		return;
	}
	(void)uv_tcp_nodelay(&c->tcp, 1);
	c->state = ST_HANDSHAKING;
	ret = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
	if (ret < 0) {
		snprintf(why, sizeof(why), "connect: %s", uv_strerror(ret));
		conn_fail(c, TLS_E_CONNECT, why);
		return;
	}
	handshake_step(c); /* sends the ClientHello */
}

static void
timer_cb(uv_timer_t *t)
{
	struct tls_conn *c = t->data;
	char why[TLS_WHY_MAX];

	if (c->closing)
		return;
	switch (c->state) {
	case ST_CONNECTING:
		snprintf(why, sizeof(why), "connect timeout after %u ms",
		    c->timeout_ms);
		conn_fail(c, TLS_E_TIMEOUT, why);
		break;
	case ST_HANDSHAKING:
		snprintf(why, sizeof(why), "handshake timeout after %u ms",
		    c->timeout_ms);
		conn_fail(c, TLS_E_TIMEOUT, why);
		break;
	case ST_ESTABLISHED:
		/* A write error deferred by tls_conn_write. */
		if (c->pending_err) {
			snprintf(why, sizeof(why), "write: %s", c->pending_why);
			conn_end(c, TLS_E_IO, why);
		}
		break;
	}
}

/* ---- public ---- */

/* The name for the log and error texts: the auth name, or the address
 * when pins alone authenticate. Returns a mem_alloc'd string or NULL. */
static char *
conn_label(const struct sockaddr *addr, const char *auth_name)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (auth_name != NULL && auth_name[0] != '\0')
		return mem_strdup(auth_name);
	if (addr->sa_family == AF_INET)
		(void)uv_ip4_name((const struct sockaddr_in *)addr, ip,
		    sizeof(ip));
	else if (addr->sa_family == AF_INET6)
		(void)uv_ip6_name((const struct sockaddr_in6 *)addr, ip,
		    sizeof(ip));
	return mem_strdup(ip);
}

int
tls_conn_new(uv_loop_t *loop, struct tls_ctx *ctx,
    const struct sockaddr *addr, const struct tls_peer *peer,
    unsigned timeout_ms, const struct tls_conn_cbs *cbs, void *arg,
    struct tls_conn **out)
{
	struct tls_conn *c;
	int err = TLS_E_NOMEM, ret;

	*out = NULL;
	/* Nothing to authenticate the server with: a programming error, and
	 * connecting anyway would be an unauthenticated session. */
	if (peer == NULL || ((peer->auth_name == NULL ||
	    peer->auth_name[0] == '\0') &&
	    (peer->pins == NULL || peer->n_pins == 0)))
		return TLS_E_CONNECT;
	c = mem_calloc(1, sizeof(*c));
	if (c == NULL)
		return TLS_E_NOMEM;
	c->loop = loop;
	c->cbs = *cbs;
	c->arg = arg;
	c->timeout_ms = timeout_ms;
	c->state = ST_CONNECTING;
	c->has_name = peer->auth_name != NULL && peer->auth_name[0] != '\0';
	c->name = conn_label(addr, peer->auth_name);
	if (c->name == NULL)
		goto fail_free;
	if (peer->pins != NULL && peer->n_pins > 0) {
		c->pins = mem_alloc(peer->n_pins * sizeof(*c->pins));
		if (c->pins == NULL)
			goto fail_free;
		memcpy(c->pins, peer->pins, peer->n_pins * sizeof(*c->pins));
		c->n_pins = peer->n_pins;
	}

	/* GnuTLS fails here only for lack of memory. Session tickets are on
	 * by default for a client (no GNUTLS_NO_TICKETS). */
	ret = gnutls_init(&c->session, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
	if (ret < 0) {
		c->session = NULL;
		goto fail_free;
	}
	if (gnutls_priority_set(c->session, ctx->prio) < 0 ||
	    gnutls_credentials_set(c->session, GNUTLS_CRD_CERTIFICATE,
	    ctx->cred) < 0)
		goto fail_free;
	/* No SNI without a name: an address is not a valid server name
	 * (RFC 6066 3), and a pinned server needs none. */
	if (c->has_name && gnutls_server_name_set(c->session, GNUTLS_NAME_DNS,
	    c->name, strlen(c->name)) < 0)
		goto fail_free;
	gnutls_session_set_ptr(c->session, c);
	gnutls_session_set_verify_function(c->session, verify_cb);
	if (peer->session != NULL && peer->session_len > 0) {
		/* GnuTLS unpacks (copies) it. Stale or foreign data only
		 * costs the resumption: the handshake is a full one then. */
		ret = gnutls_session_set_data(c->session, peer->session,
		    peer->session_len);
		if (ret == GNUTLS_E_MEMORY_ERROR)
			goto fail_free;
		if (ret < 0)
			log_debug("tls %s: session data not used: %s",
			    c->name, gnutls_strerror(ret));
	}
	/* Our timer bounds the handshake; GnuTLS must not keep its own. */
	gnutls_handshake_set_timeout(c->session, GNUTLS_INDEFINITE_TIMEOUT);
	gnutls_transport_set_ptr(c->session, c);
	gnutls_transport_set_pull_function(c->session, pull_fn);
	gnutls_transport_set_pull_timeout_function(c->session, pull_timeout_fn);
	gnutls_transport_set_vec_push_function(c->session, vec_push_fn);

	err = TLS_E_CONNECT;
	ret = uv_tcp_init(loop, &c->tcp);
	if (ret < 0)
		goto fail_free;
	c->tcp.data = c;
	/* From here on the handles own the memory: conn_shutdown frees. */
	(void)uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	(void)uv_check_init(loop, &c->flush);
	c->flush.data = c;
	(void)uv_idle_init(loop, &c->nudge);
	c->nudge.data = c;
	c->handles_open = 4;

	c->connect_req.data = c;
	ret = uv_tcp_connect(&c->connect_req, &c->tcp, addr, connect_cb);
	if (ret < 0)
		goto fail_close;
	if (timeout_ms > 0)
		(void)uv_timer_start(&c->timer, timer_cb, timeout_ms, 0);
	*out = c;
	return 0;

fail_close:
	log_debug("tls %s: connect: %s", c->name, uv_strerror(ret));
	c->tls_broken = 1;
	conn_shutdown(c, 0);
	return err;

fail_free:
	conn_free(c);
	return err;
}

/* A write failed inside GnuTLS: report it through closed_cb from the next
 * loop turn, not from inside the caller's write. */
static void
write_failed(struct tls_conn *c, int gnutls_err)
{
	log_debug("tls %s: write: %s", c->name,
	    gnutls_strerror(gnutls_err));
	c->tls_broken = 1;
	c->pending_err = 1;
	c->pending_why = gnutls_strerror(gnutls_err);
	(void)uv_timer_start(&c->timer, timer_cb, 0, 0);
}

static void
nudge_cb(uv_idle_t *h)
{
	(void)h;
}

/* End of the loop turn's I/O: send everything corked since the last
 * flush, as few TLS records and one uv_write where it fits. */
static void
flush_cb(uv_check_t *h)
{
	struct tls_conn *c = h->data;
	ssize_t n;
	int spin = 0;

	uv_check_stop(h);
	uv_idle_stop(&c->nudge);
	if (!c->corked || c->closing)
		return;
	c->corked = 0;
	do {
		/* Push never says EAGAIN; if GnuTLS ever does, it wants the
		 * same call again. */
		n = gnutls_record_uncork(c->session, 0);
	} while ((n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) &&
	    ++spin < TLS_MAX_SPIN);
	if (n < 0)
		write_failed(c, (int)n);
}

int
tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len)
{
	size_t off = 0;
	ssize_t n;
	int spin = 0;

	/* Never before verification: that would be plaintext to an
	 * unauthenticated peer, or nothing at all. */
	if (c->closing || c->state != ST_ESTABLISHED || c->pending_err)
		return TLS_E_IO;
	/* Many queries arrive in one loop turn (a recvmmsg batch, a TCP
	 * read with several frames): cork them into shared records and
	 * send them when the turn's I/O is done. That costs no latency and
	 * saves a record, a write and a segment per query at both ends. */
	if (!c->corked) {
		gnutls_record_cork(c->session);
		c->corked = 1;
		(void)uv_check_start(&c->flush, flush_cb);
		(void)uv_idle_start(&c->nudge, nudge_cb);
	}
	while (off < len) {
		n = gnutls_record_send(c->session, data + off, len - off);
		if (n > 0) {
			off += (size_t)n;
			spin = 0;
			continue;
		}
		if ((n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) &&
		    ++spin < TLS_MAX_SPIN)
			continue;
		write_failed(c, (int)n);
		return TLS_E_IO;
	}
	return 0;
}

size_t
tls_conn_write_queue_size(const struct tls_conn *c)
{
	return c->write_queued;
}

void
tls_conn_close(struct tls_conn *c)
{
	if (c == NULL)
		return;
	conn_shutdown(c, 1);
}

const char *
tls_conn_describe(struct tls_conn *c, char *buf, size_t cap)
{
	const char *proto, *cipher;

	if (cap == 0)
		return buf;
	if (c->state != ST_ESTABLISHED) {
		snprintf(buf, cap, "not established");
		return buf;
	}
	proto = gnutls_protocol_get_name(gnutls_protocol_get_version(
	    c->session));
	cipher = gnutls_cipher_get_name(gnutls_cipher_get(c->session));
	snprintf(buf, cap, "%s %s", proto != NULL ? proto : "?",
	    cipher != NULL ? cipher : "?");
	return buf;
}

int
tls_conn_get_session(struct tls_conn *c, uint8_t **data, size_t *len)
{
	gnutls_datum_t d = { NULL, 0 };
	int rc = -1;

	*data = NULL;
	*len = 0;
	if (c->closing || c->state != ST_ESTABLISHED)
		goto out;
	/* TLS 1.3: without a ticket, get_data2 would read from the socket
	 * itself (see the top of the file) and then hand out a blob that
	 * cannot resume anyway. */
	if (gnutls_protocol_get_version(c->session) == GNUTLS_TLS1_3 &&
	    !(gnutls_session_get_flags(c->session) &
	    GNUTLS_SFLAGS_SESSION_TICKET))
		goto out;
	if (gnutls_session_get_data2(c->session, &d) < 0 || d.size == 0)
		goto out;
	*data = mem_alloc(d.size);
	if (*data == NULL)
		goto out;
	memcpy(*data, d.data, d.size);
	*len = d.size;
	rc = 0;
out:
	gnutls_free(d.data);
	return rc;
}

int
tls_conn_resumed(const struct tls_conn *c)
{
	if (c->state != ST_ESTABLISHED)
		return 0;
	return gnutls_session_is_resumed(c->session) ? 1 : 0;
}

int64_t
tls_conn_cert_expiry(const struct tls_conn *c)
{
	return c->state == ST_ESTABLISHED ? c->cert_expiry : 0;
}

const char *
tls_conn_version(const struct tls_conn *c)
{
	const char *v;

	if (c->state != ST_ESTABLISHED)
		return "";
	v = gnutls_protocol_get_name(gnutls_protocol_get_version(c->session));
	return v != NULL ? v : "";
}

int64_t
tls_conn_chain_min_not_after(const struct tls_conn *c)
{
	return c->chain_seen ? c->chain_min_not_after : 0;
}

int
tls_conn_leaf_pin(const struct tls_conn *c, char *buf, size_t cap)
{
	gnutls_datum_t in, out = { NULL, 0 };
	int rc = -1;

	if (cap > 0)
		buf[0] = '\0';
	if (!c->chain_seen || !c->have_leaf_pin)
		return -1;
	in.data = (unsigned char *)(uintptr_t)c->leaf_pin;
	in.size = sizeof(c->leaf_pin);
	if (gnutls_base64_encode2(&in, &out) < 0)
		return -1;
	if (out.size < cap) {
		memcpy(buf, out.data, out.size);
		buf[out.size] = '\0';
		rc = 0;
	}
	gnutls_free(out.data);
	return rc;
}

int
tls_conn_pin_state(const struct tls_conn *c)
{
	if (!c->chain_seen)
		return c->n_pins > 0 ? 0 : -1;
	return c->pin_state;
}

enum tls_failure
tls_conn_failure(const struct tls_conn *c)
{
	return c->failure;
}
