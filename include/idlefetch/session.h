/*
 * session: one IMAP connection for one account+folder, from resolving the
 * host to IDLE, with its own reconnect/backoff loop. It owns its transport,
 * framer and the batches of messages being delivered.
 */
#ifndef IDLEFETCH_SESSION_H
#define IDLEFETCH_SESSION_H

#include <stdbool.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/status.h"

struct session;
struct sync_ops;

/* Called once when the session has stopped for good (ok: last sync fine). */
typedef void session_done_cb(struct session *s, void *ud, bool ok);

struct session_opts {
	const struct account *acct; /* borrowed, must outlive the session */
	const char *folder; /* borrowed */
	const char *state_dir; /* borrowed */
	SSL_CTX *ssl_ctx; /* borrowed; NULL when tls = none */
	bool once; /* sync once, then LOGOUT and finish */
	struct status_rec *status; /* borrowed; the session keeps it current */
	const struct sync_ops *sync; /* the folder's sync: &mailbox_sync_ops */
	session_done_cb *done;
	void *ud;
};

struct session *session_new(uv_loop_t *loop, const struct session_opts *o);
void session_start(struct session *s);
/*
 * Graceful stop: the message being received is finished and committed,
 * state saved, LOGOUT sent; then the done callback runs.
 */
void session_stop(struct session *s);
/* Only after the done callback. */
void session_free(struct session *s);

#endif
