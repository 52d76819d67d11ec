/*
 * session: the scheduler of one account's IMAP connection (conn.h) and
 * one or more of its folders, with its own reconnect/backoff loop. It owns
 * the connection and the mailbox sync of the folder it works on. With several folders it syncs them in turn, then waits: with
 * NOTIFY (RFC 5465) the server tells it of every folder; without, it
 * IDLEs on one and polls the others with STATUS.
 */
#ifndef IDLEFETCH_SESSION_H
#define IDLEFETCH_SESSION_H

#include <stdbool.h>

#include <openssl/ssl.h>
#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/gate.h"
#include "idlefetch/status.h"

struct session;

/* Called once when the session has stopped for good (ok: last sync fine). */
typedef void session_done_cb(struct session *s, void *ud, bool ok);
/*
 * Called once, at the first login of a session holding several folders,
 * when the server offers IDLE but not NOTIFY: the owner may keep fewer
 * folders here (session_keep) and watch the rest on other connections.
 */
typedef void session_split_cb(struct session *s, void *ud);
/*
 * folders = *: called after each listing of the subscribed folders with
 * the account's folders as they now are (names borrowed for the call).
 * The owner may hand them to the session (session_set_folders) from here.
 */
typedef void session_folders_cb(struct session *s, void *ud,
    const char *const *names, size_t n);

struct session_opts {
	const struct account *acct; /* borrowed, must outlive the session */
	const char *const *folders; /* borrowed; INBOX usually first */
	size_t nfolders;
	const char *state_dir; /* borrowed */
	SSL_CTX *ssl_ctx; /* borrowed; NULL when tls = none */
	bool once; /* sync once, then LOGOUT and finish */
	struct status_rec *status; /* borrowed, one per folder; kept current */
	struct gate *gate; /* borrowed; NULL: no limit */
	session_done_cb *done;
	session_split_cb *split; /* NULL: never split */
	/*
	 * Lists the subscribed folders at each login and every poll_interval
	 * (account's folders = *), and tells them here.
	 */
	session_folders_cb *listed; /* NULL: never lists */
	struct oauth *oauth; /* borrowed; the account's, for auth = *oauth* */
	struct hook *hook; /* borrowed; the account's on_delivery, or NULL */
	void *ud;
};

struct session *session_new(uv_loop_t *loop, const struct session_opts *o);
void session_start(struct session *s);
/*
 * Graceful stop: the message being received is finished and committed,
 * state saved, LOGOUT sent; then the done callback runs.
 */
void session_stop(struct session *s);
/* What a folder is doing, for the service manager's one-line summary. */
enum session_activity {
	SESSION_IDLING,
	SESSION_POLLING,
	SESSION_BACKOFF,
	SESSION_STOPPED,
	SESSION_BUSY, /* connecting or syncing */
	SESSION_ACTIVITIES,
};

/* Adds each of the session's folders to k[] by what it is doing. */
void session_tally(const struct session *s,
    unsigned k[SESSION_ACTIVITIES]);
/* Only after the done callback. */
void session_free(struct session *s);
/* From the split callback only: keeps the first n (>= 1) folders. */
void session_keep(struct session *s, size_t n);
/*
 * From the folders callback only: the session's folders become names
 * (borrowed, n >= 1), with one status record each (borrowed). What it knew
 * of a folder that stays is kept; a new one is made ready and synced.
 */
void session_set_folders(struct session *s, const char *const *names,
    size_t n, struct status_rec *recs);

#endif
