/*
 * handover: an account's IMAP connection, and the one that replaces it
 * before it ends. A connection logged in with an OAuth2 token whose expiry
 * is known (oauth_renew_at) is ended by the server when the token runs
 * out; a little before that, a second connection opens, logs in with a new
 * token (through the gate, like every login) and waits READY. The owner
 * decides when it takes over (handover_swap): the new connection becomes
 * the owner's, the old one says LOGOUT on its own and is freed when
 * closed.
 *
 * Whichever connection is the owner's now, its callbacks go to the
 * conn_ops the owner gave; the replacement's and the old one's are this
 * module's. A replacement that fails is logged and dropped: the owner's
 * connection goes on until it ends, as without one.
 */
#ifndef IDLEFETCH_HANDOVER_H
#define IDLEFETCH_HANDOVER_H

#include <stdbool.h>

#include <uv.h>

#include "idlefetch/conn.h"

struct gate;
struct handover;

struct handover_ops {
	/* The replacement is due: whether to start it (not when stopping). */
	bool (*may_start)(void *ud);
	/* The replacement is logged in: handover_ready() from now. */
	void (*ready)(void *ud);
};

/*
 * o as for conn_new(): o->ops and o->ud are the owner's, and ud is also
 * what hops receive. o, gate (NULL: none) and hops are borrowed.
 */
struct handover *handover_new(uv_loop_t *loop, const struct conn_opts *o,
    struct gate *gate, const struct handover_ops *hops);
/* Closes every connection at once; memory goes once libuv is done. */
void handover_free(struct handover *h);
/* The owner's connection (another one after a swap or a take). */
struct conn *handover_conn(const struct handover *h);
/* The owner's connection logged in: its replacement is planned, if due. */
void handover_plan(struct handover *h);
/* The owner's connection closed: nothing more is planned for it. */
void handover_cancel(struct handover *h);
/* A replacement is logged in and waits. */
bool handover_ready(const struct handover *h);
/* The replacement (ready) takes over; the old connection says LOGOUT. */
void handover_swap(struct handover *h);
/*
 * The owner's connection is gone: a replacement under way takes its
 * place, with *logged_in telling whether it is ready. False when there
 * is none (one still waiting at the gate is dropped).
 */
bool handover_take(struct handover *h, bool *logged_in);
/* No replacement any more (stopping, or done). */
void handover_drop(struct handover *h);

#endif
