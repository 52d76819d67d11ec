/*
 * transport: one TCP connection on the libuv loop, optionally wrapped in
 * TLS (implicit or started later for STARTTLS). It delivers plaintext to its
 * owner through one callback and takes plaintext to send.
 */
#ifndef IDLEFETCH_TRANSPORT_H
#define IDLEFETCH_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>
#include <uv.h>

enum transport_event {
	TRANSPORT_CONNECTED, /* TCP is up */
	TRANSPORT_TLS_READY, /* handshake done and peer verified */
	TRANSPORT_DATA, /* plaintext in data/len */
	TRANSPORT_ERROR, /* err and why set; the connection is unusable */
};

/*
 * data is valid during the call only. why is a one-line reason for
 * TRANSPORT_ERROR. The callback may call transport_free().
 */
typedef void transport_cb(void *ud, enum transport_event ev, const char *data,
    size_t len, int err, const char *why);

struct transport;

struct transport *transport_new(uv_loop_t *loop, transport_cb *cb, void *ud);
/* Resolves host without blocking and connects to each address in turn. */
int transport_connect(struct transport *t, const char *host, unsigned port);
/* Starts a TLS handshake on the connected socket. ctx is borrowed. */
int transport_start_tls(struct transport *t, SSL_CTX *ctx, const char *host);
/*
 * Queues bytes (copied). Errors arrive as TRANSPORT_ERROR, never from
 * within this call, even when nothing could be queued (the negative
 * return value then says so at once).
 */
int transport_write(struct transport *t, const char *p, size_t n);
/* Stops or resumes reading from the socket (backpressure). */
void transport_pause(struct transport *t, bool pause);
bool transport_is_tls(const struct transport *t);
/* No callback is made after this; memory goes once libuv is done with it. */
void transport_free(struct transport *t);

#endif
