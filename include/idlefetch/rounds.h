/*
 * rounds: the scheduler's rounds over the folders it does not wait on.
 * Without NOTIFY, the folders other than the selected one are asked with
 * STATUS every status_interval (poll_interval without IDLE); with
 * folders = *, the subscribed folders are listed every poll_interval;
 * with NOTIFY (RFC 5465), the server is asked once to tell of every
 * folder. This module keeps when each round last ran, sends the STATUS
 * and NOTIFY commands, counts their replies and says when a round is due;
 * what a folder's news leads to is the scheduler's decision.
 */
#ifndef IDLEFETCH_ROUNDS_H
#define IDLEFETCH_ROUNDS_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/mailbox.h"
#include "idlefetch/proto.h"
#include "idlefetch/watch.h"

struct rounds;

/* A STATUS round or NOTIFY SET is over (not called when the connection
 * closes first): the scheduler goes on. */
typedef void rounds_over_cb(void *ud);

struct rounds_opts {
	const struct account *acct; /* borrowed, must outlive the rounds */
	bool lists; /* folders = *: the subscribed folders are listed too */
	rounds_over_cb *over;
	conn_untagged_cb *line; /* each STATUS line of a round */
	void *ud;
};

/* Which round is due, when the wait is over. */
enum rounds_due {
	ROUNDS_NONE,
	ROUNDS_LIST, /* list the subscribed folders (then STATUS) */
	ROUNDS_STATUS, /* ask the other folders with STATUS */
};

struct rounds *rounds_new(uv_loop_t *loop, const struct rounds_opts *o);
void rounds_free(struct rounds *r);
/*
 * Logged in on c (borrowed until rounds_reset(): a replacement may take
 * the place of the first): no round is due yet.
 */
void rounds_login(struct rounds *r, struct conn *c);
/* The connection closed: no reply is awaited, nothing asked again. */
void rounds_reset(struct rounds *r);

/* How often the other folders are asked with STATUS, in ms. */
uint64_t rounds_status_every_ms(const struct rounds *r);
/* How long to IDLE: until the next round, if sooner than idle_refresh. */
uint64_t rounds_idle_ms(const struct rounds *r, const struct watch *w);
/* How long to wait without IDLE: until the next round, or poll_interval. */
uint64_t rounds_poll_wait_ms(const struct rounds *r, const struct watch *w);
/* Out of a wait: which round is due now (listing first). */
enum rounds_due rounds_due(const struct rounds *r, const struct watch *w);

/* A listing of the subscribed folders starts now. */
void rounds_listing(struct rounds *r);
/* NOTIFY overflowed: set it again before the next wait. */
void rounds_renotify(struct rounds *r);
/* Whether NOTIFY is to be set again (and it now is taken care of). */
bool rounds_take_renotify(struct rounds *r);

/*
 * A STATUS response, NOTIFY's or a round's: true when the folder of w it
 * tells of (not selected) now has news and is to be synced. folder names
 * the log lines (borrowed for the call; may be NULL).
 */
bool
rounds_news(struct rounds *r, struct watch *w, const struct proto_resp *resp,
    const struct mailbox *selected, const char *folder);
/*
 * NOTIFY's LIST line: a folder was created, removed or (un)subscribed.
 * True when that matters (folders = *, with NOTIFY on w): the folders are
 * listed again at the next wake.
 */
bool rounds_list_news(struct rounds *r, const struct watch *w);
/*
 * RFC 5465 5.8: the server tells of nothing more until NOTIFY is set
 * again. Every folder of w is to be synced, as news may have been lost,
 * and NOTIFY set again before the next wait.
 */
void rounds_overflow(struct rounds *r, struct watch *w, const char *folder);

/*
 * Asks every folder of w but selected for its UIDNEXT (watch_poll()).
 * Returns how many STATUS commands it sent; when more than 0, the over
 * callback runs after the last reply. folder names the log lines
 * (borrowed until then; may be NULL).
 */
unsigned rounds_poll(struct rounds *r, struct watch *w,
    const struct mailbox *selected, const char *folder);
/*
 * Sends NOTIFY SET for every folder of w (borrowed until the reply);
 * again: after an overflow. On its reply, w watches with NOTIFY when the
 * server took it, and the over callback runs. folder as for rounds_poll.
 */
void rounds_notify(struct rounds *r, struct watch *w, bool again,
    const char *folder);

#endif
