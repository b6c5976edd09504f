/* fake_tls.h: test hooks of the fake TLS module (fake_tls.c).
 *
 * fake_tls.c implements the whole of tls.h without sockets or GnuTLS, so
 * that src/upstream.c can be driven byte by byte: a fuzzer or a test opens
 * connections through the pool, sees what the pool wrote (the query
 * frames, with the IDs it chose), and hands the pool any bytes it likes as
 * if they had been decrypted from the server. Everything happens on the
 * loop given to tls_conn_new; no callback is called from inside a tls_*
 * function, as with the real module.
 *
 * Connections are listed in the order they were created; a connection
 * leaves the list when the pool closes it (tls_conn_close) or when
 * fake_tls_peer_close or a failed handshake ended it.
 */
#ifndef DOTPROXY_FAKE_TLS_H
#define DOTPROXY_FAKE_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "tls.h"

/* How the next tls_conn_new ends, by default FAKE_TLS_OK. */
enum fake_tls_outcome {
	FAKE_TLS_OK = 0,          /* connected_cb(0) on the next loop turn */
	FAKE_TLS_REFUSE,          /* tls_conn_new returns TLS_E_CONNECT */
	FAKE_TLS_CONNECT_FAIL,    /* connected_cb(TLS_E_CONNECT) */
	FAKE_TLS_TIMEOUT,         /* connected_cb(TLS_E_TIMEOUT) */
	FAKE_TLS_HANDSHAKE_FAIL,  /* connected_cb(TLS_E_HANDSHAKE) */
	FAKE_TLS_VERIFY_FAIL,     /* connected_cb(TLS_E_VERIFY), no name */
	FAKE_TLS_PIN_FAIL,        /* connected_cb(TLS_E_VERIFY), no pin */
	FAKE_TLS_N_OUTCOMES
};

/* Frames remembered per connection (the newest ones). */
#define FAKE_TLS_FRAMES 32
#define FAKE_TLS_FRAME_MAX 512

/* Forget everything (the connections must all be gone) and restart the
 * deterministic randomness (gnutls_rnd, see fake_tls.c) from seed. */
void fake_tls_reset(uint32_t seed);

/* The outcome of every later tls_conn_new until set again. */
void fake_tls_set_outcome(enum fake_tls_outcome o);

/* Connections now listed, and whether connection i has reported
 * connected_cb(0) (it may then be fed). i out of range: NULL / 0. */
size_t fake_tls_count(void);
struct tls_conn *fake_tls_conn(size_t i);
int fake_tls_established(const struct tls_conn *c);

/* Connections created so far (tls_conn_new returning 0), since reset. */
size_t fake_tls_created(void);

/* Frames written on c: how many in all, and frame k counted from the
 * oldest still remembered (0 <= k < min(total, FAKE_TLS_FRAMES)); its
 * bytes (length prefix included) and *len, or NULL. A write longer than
 * FAKE_TLS_FRAME_MAX is remembered cut to that size. */
size_t fake_tls_written(const struct tls_conn *c);
const uint8_t *fake_tls_frame(const struct tls_conn *c, size_t k,
    size_t *len);

/* Deliver len bytes to c's read_cb, as one chunk. c must be established.
 * The pool may close c from its callback: use fake_tls_count/fake_tls_conn
 * afterwards, not c. */
void fake_tls_feed(struct tls_conn *c, const uint8_t *data, size_t len);

/* The peer ends c: its closed_cb(status) now, then c is freed. */
void fake_tls_peer_close(struct tls_conn *c, int status);

/* The next tls_conn_write on c fails (TLS_E_IO) and closed_cb follows on
 * the next loop turn, as tls.c does after a GnuTLS write error. */
void fake_tls_fail_next_write(struct tls_conn *c);

#endif
