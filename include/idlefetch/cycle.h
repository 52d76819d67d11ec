/*
 * cycle: the work of one account's logged-in connection. Each folder with
 * news is synced in turn (SELECT -> SYNC); then the connection waits:
 * IDLE, or a poll's timer without it. With NOTIFY (RFC 5465) the server
 * tells of every folder; without, the other folders are asked with STATUS
 * when their poll is due; folders = * lists the subscribed folders. The
 * session (session.h) logs in, reconnects and stops; between a login and
 * the connection's end it hands the connection to its cycle.
 *
 *   CONNECT (no connection) -> [DISCOVER] -> [NOTIFY] -> ([PREPARE] SYNC)
 *   for each folder -> IDLE | POLL_WAIT -> [DISCOVER] [STATUS] -> SYNC ...
 *   -> LOGOUT (its work is over)
 */
#ifndef IDLEFETCH_CYCLE_H
#define IDLEFETCH_CYCLE_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/cursor.h"
#include "idlefetch/proto.h"
#include "idlefetch/schedstate.h"

struct cycle;

/* What the cycle tells its session (the session's own events stay its). */
struct cycle_ops {
	/* The connection cannot go on (no folder opens): it fails. */
	void (*failed)(void *ud, int err, const char *why);
	/* The work is over (a single pass, or stopping): LOGOUT. */
	void (*over)(void *ud, const char *why);
	/*
	 * About to wait, or a wait just ended, with every folder synced: the
	 * session may hand the folders to another connection now (true: it
	 * did, and the cycle started over there).
	 */
	bool (*between)(void *ud);
	/* The state changed (`idlefetch status`). */
	void (*changed)(void *ud);
	/* folders = *: the subscribed folders (NULL: they could not be listed). */
	void (*listed)(void *ud, const char *const *names, size_t n);
	/* Several folders, IDLE but no NOTIFY: they may be spread now. */
	void (*split)(void *ud);
};

struct cycle_opts {
	const struct account *acct; /* borrowed */
	const char *state_dir; /* borrowed */
	struct cursor *cursor; /* borrowed: the folders, outlives the cycle */
	bool once; /* one pass, then over */
	bool lists; /* folders = *: list the subscribed folders */
	bool splits; /* ops->split may be called */
	const struct cycle_ops *ops;
	void *ud;
};

struct cycle *cycle_new(uv_loop_t *loop, const struct cycle_opts *o);
/* Closes its handles; then, once the loop ran their close, cycle_free(). */
void cycle_close(struct cycle *cy);
void cycle_free(struct cycle *cy);
/* S_CONNECT while it has no connection, else one of the states above. */
enum session_state cycle_state(const struct cycle *cy);

/* The connection c (borrowed until cycle_forget) logged in: go. */
void cycle_login(struct cycle *cy, struct conn *c);
/* The connection is gone: the folders let go of it too. */
void cycle_forget(struct cycle *cy);
/* A folder synced (or, after cursor_skip(), was left out): go on. */
void cycle_next(struct cycle *cy);
/* An untagged response no command asked for. */
void cycle_untagged(struct cycle *cy, const struct proto_resp *r);
/* The folders changed (added: a new one): NOTIFY SET again if it is on. */
void cycle_folders_changed(struct cycle *cy, struct conn *c, bool added);
/* Waiting in IDLE: it ends, now or once accepted (then ops->between). */
void cycle_wake(struct cycle *cy);
/* Syncing, with no message halfway in: the connection may close. */
bool cycle_may_close(const struct cycle *cy);

/* What a stop asks of the session (cycle_stop). */
enum cycle_stop {
	CYCLE_STOP_LATER, /* a reply still to come leads to ops->over */
	CYCLE_STOP_LOGOUT, /* over now: LOGOUT */
	CYCLE_STOP_CLOSE, /* close the connection now */
};
/* The session stops: what it does now. */
enum cycle_stop cycle_stop(struct cycle *cy);

#endif
