/*
 * mailbox: one folder of an account. It owns the folder's Maildir (through
 * its lane), its state file and index, and everything done to sync it on a
 * connection it is given: SELECT, the check of the last delivered UID, the
 * listing, pipelined fetches streamed into its lane, commits, the
 * after-delivery actions, recovery from a renumbering and the compaction
 * of its index.
 *
 *   NEW -> PREPARE -> READY -> SELECT -> [RECONCILE] -> [VERIFY] ->
 *   [RECOVER -> LIST -> MATCH] | LIST -> FETCH -> [COMPACT_LIST -> COMPACT]
 *   -> SYNCED; the connection gone -> READY; its Maildir failed -> DEAD
 *
 * mailbox_enter() is the one place that changes its state. It sends its
 * commands on the connection it was attached to (conn.h) and takes the
 * message bodies as that connection's sink; it never changes the
 * connection's state. What it has to tell goes to its owner through the
 * ops the owner registered: done, refused, failed ...
 */
#ifndef IDLEFETCH_MAILBOX_H
#define IDLEFETCH_MAILBOX_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "idlefetch/config.h"
#include "idlefetch/conn.h"
#include "idlefetch/proto.h"
#include "idlefetch/status.h"

enum mailbox_state {
	MB_NEW, /* its Maildir and state not yet read */
	MB_PREPARE, /* ...being read, on the threadpool */
	MB_READY, /* on no connection */
	MB_SELECT, /* SELECT sent (or LIST, looking for a refused name) */
	MB_RECONCILE, /* files a crash left in new/ are looked for */
	MB_VERIFY, /* what UID last_uid holds now is asked */
	MB_RECOVER, /* the state is marked "recovering" */
	MB_LIST, /* the UIDs to fetch are listed */
	MB_MATCH, /* a recovery's listing is matched against the index */
	MB_FETCH, /* batches, commits, after-actions */
	MB_COMPACT_LIST, /* the server's UIDs are listed for the index */
	MB_COMPACT, /* ...and the index rewritten with them */
	MB_SYNCED, /* selected, nothing to do until told of news */
	MB_DEAD, /* stopped for good: its Maildir or state is unusable */
};

struct mailbox;
struct selection;

struct mailbox_ops {
	/* The PREPARE job ended: READY, or DEAD (the folder cannot go on). */
	void (*prepared)(void *ud, struct mailbox *mb, int err,
	    const char *why);
	/* A sync ended; the folder stays selected (SYNCED). */
	void (*synced)(void *ud, struct mailbox *mb);
	/* The server would not open the folder (READY again). */
	void (*refused)(void *ud, struct mailbox *mb, const char *why);
	/*
	 * The connection cannot go on: err is a negative errno or
	 * IDLEFETCH_E*, final when retrying cannot help. Logged by the owner.
	 */
	void (*failed)(void *ud, struct mailbox *mb, int err, bool final,
	    const char *why);
	/* Disk work ended while the mailbox is on no connection. */
	void (*settled)(void *ud, struct mailbox *mb);
	/* Messages made durable (n > 0). */
	void (*delivered)(void *ud, struct mailbox *mb, unsigned n);
};

struct mailbox_opts {
	const struct account *acct; /* borrowed */
	const char *state_dir; /* borrowed */
	const char *name; /* borrowed; UTF-8 */
	struct status_rec *status; /* borrowed; kept current */
	const char *move_wire; /* borrowed: after = move:'s target */
	const struct mailbox_ops *ops; /* borrowed */
	void *ud;
};

struct mailbox *mailbox_new(uv_loop_t *loop, const struct mailbox_opts *o);
/*
 * Frees it now, or once its disk work is done (a folder dropped while
 * its last message is written out). Only on no connection.
 */
void mailbox_release(struct mailbox *mb);
/* The name and status record change (borrowed, as at mailbox_new). */
void mailbox_rename(struct mailbox *mb, const char *name,
    struct status_rec *rec);

/* Reads its Maildir and state on the threadpool: ops->prepared. */
void mailbox_prepare(struct mailbox *mb);
/* SELECTs it on c (logged in) and syncs it: ops->synced in the end. */
void mailbox_select(struct mailbox *mb, struct conn *c);
/* Selected already: lists and fetches again. */
void mailbox_again(struct mailbox *mb);
/*
 * An untagged response of the selected folder (EXISTS, EXPUNGE, SELECT's
 * UIDVALIDITY and UIDNEXT). Returns whether it has more messages now.
 */
bool mailbox_untagged(struct mailbox *mb, const struct proto_resp *r);
/* Stopping: no more batches; what is complete is committed. */
void mailbox_stop(struct mailbox *mb);
/* Stopping: whether nothing would be lost by closing now. */
bool mailbox_may_close(const struct mailbox *mb);
/* Off its connection (closed, or another folder's now): READY. */
void mailbox_detach(struct mailbox *mb);
/*
 * On no connection: commits what arrived whole. Returns true when no
 * disk work is left; else ops->settled comes after each piece of it,
 * and the owner calls this again from there (one commit at a time).
 */
bool mailbox_settle(struct mailbox *mb);
/* No disk work in flight. */
bool mailbox_quiet(const struct mailbox *mb);

enum mailbox_state mailbox_state(const struct mailbox *mb);
const char *mailbox_state_name(enum mailbox_state st);
const char *mailbox_name(const struct mailbox *mb);
/*
 * What its SELECT said and how the server spells its name
 * (selection_wire, selection_uidnext ...); valid while mb is.
 */
const struct selection *mailbox_selection(const struct mailbox *mb);
struct status_rec *mailbox_status(const struct mailbox *mb);
/* Its Maildir and state were read (not NEW, PREPARE or DEAD). */
bool mailbox_prepared(const struct mailbox *mb);
bool mailbox_dead(const struct mailbox *mb);
/* The last sync lacked nothing. */
bool mailbox_sync_ok(const struct mailbox *mb);
/* A new connection: its sync has lacked nothing so far. */
void mailbox_reset_ok(struct mailbox *mb);

#endif
