/*
 * fetch: the listing of one folder's sync, its batches and the message
 * streaming into its lane. The listing (fetch_list) sorts the UIDs the
 * server holds into those to fetch and those delivered already that the
 * after-action deletes or moves (fetch_pump queues them). A batch is one
 * pipelined `UID FETCH` of up to BATCH_MAX_MSGS UIDs; its bodies arrive
 * as literals through the connection's sink (fetch_sink), CRLF made LF,
 * into the lane it was given, and the head batch is committed once its tagged OK is in and its
 * writes are on disk. The mailbox decides when to send, commit and stop.
 */
#ifndef IDLEFETCH_FETCH_H
#define IDLEFETCH_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idlefetch/after.h"
#include "idlefetch/commit.h"
#include "idlefetch/conn.h"
#include "idlefetch/lane.h"
#include "idlefetch/state.h"
#include "idlefetch/uidlist.h"

struct fetch;

/* What it tells its owner (the mailbox), with the ud it was given. */
struct fetch_ops {
	/* The sync may move on: writes are on disk, an action answered OK. */
	void (*progress)(void *ud);
	/*
	 * What went wrong: err < 0 fails the sync, why says what (the sink's
	 * input, a write into the Maildir, an action the server refused; the
	 * connection must close); err 0: what the sink ignored, worth a
	 * warning.
	 */
	void (*failed)(void *ud, int err, const char *why);
	/* The lane drained off the connection: its disk work is over. */
	void (*settled)(void *ud);
};

/*
 * Streams into lane (memory for lane_init(), borrowed, outliving it) in
 * maildir (borrowed), with the after-action after (AFTER_KEEP: none; for
 * AFTER_MOVE into move_wire, borrowed).
 */
struct fetch *fetch_new(uv_loop_t *loop, void *lane, const char *maildir,
    uint32_t tag, enum after_mode after, const char *move_wire,
    const struct fetch_ops *ops, void *ud);
/*
 * What its owner's state expects from now on: bodies (the batches are
 * fetched), a listing's lines (a listing of any kind is under way).
 */
void fetch_expect(struct fetch *f, bool bodies, bool lines);
/* The connection's sink, with f as its ud: bodies and each response. */
extern const struct conn_sink fetch_sink;
/* Frees it, with the batches never committed and their files in tmp/. */
void fetch_free(struct fetch *f);

/* Whether another batch may be sent: the pipeline has room, no gap. */
bool fetch_may_send(const struct fetch *f);

/*
 * Lists the folder from UID from on c, forgetting the last listing and
 * gap: UIDs above st's last_uid are to fetch, those at or below it still
 * on the server are for the after-action (not at or below keep_to, nor
 * refused). st is borrowed until done(ud, r) gets the tagged reply.
 */
void fetch_list(struct fetch *f, struct conn *c, uint32_t from,
    const struct state_rec *st, conn_done_cb *done, void *ud);
/* A new listing elsewhere (a recovery's): the gap and the last are gone. */
void fetch_restart(struct fetch *f);
/* The listing is complete: uidlist_finish() of it. */
int fetch_list_finish(struct fetch *f, bool *more);
/* UIDs it listed to fetch; whether some were left out (uidlist_cut). */
size_t fetch_count(const struct fetch *f);
bool fetch_cut(const struct fetch *f);
/* The listing itself, for a recovery to fill; owned by f. */
struct uidlist *fetch_uidlist(struct fetch *f);
/* A sync is over: the listing's memory goes (uidlist_release). */
void fetch_release(struct fetch *f);
/*
 * Moves the sync on c: queues the listed UIDs already delivered for the
 * after-action, and sends batches while the pipeline has room (none when
 * stopping); done(ud, r) gets each batch's tagged reply (once the batch is
 * marked complete when OK). Returns whether nothing is left to fetch nor
 * to act on (what a gap or stopping leaves aside).
 */
bool fetch_pump(struct fetch *f, struct conn *c, bool stopping,
    conn_done_cb *done, void *ud);
/* Batches sent and not committed yet, and those not answered yet. */
bool fetch_pending(const struct fetch *f);
size_t fetch_inflight(const struct fetch *f);
/* A batch came back short: commit no further in this listing. */
bool fetch_gap(const struct fetch *f);

/*
 * Takes the head batch for its commit if it is ready: answered (or, not
 * connected, cut off) and its writes on disk. Held until
 * fetch_committed().
 */
bool fetch_take(struct fetch *f, bool connected);
/*
 * Fills in with the taken batch's files and how many of them to commit
 * above last_uid (the state's now). Returns the UID the server newly
 * failed to return (to list again from), or 0.
 */
uint32_t fetch_plan(struct fetch *f, uint32_t last_uid,
    struct commit_in *in);
/*
 * The taken batch's commit is over (result 0 or a negative errno, its
 * first ncommit files committed), st the state after it: it is freed,
 * and, on the connection still up and outside a recovery, what it
 * committed and the target did not refuse is queued for the after-action.
 */
void fetch_committed(struct fetch *f, int result, size_t ncommit,
    const struct state_rec *st);

/* The folder is selected on c: f is its sink (conn_set_sink). */
void fetch_attach(struct fetch *f, struct conn *c);
/*
 * Another folder is selected, or the connection closed: no longer its
 * sink, nothing in flight, a body half in is dropped, the listing is
 * forgotten, and what the after-action had queued is redone later.
 */
void fetch_detach(struct fetch *f);
/* One "* n EXPUNGE" of the folder was seen (the after-action counts). */
void fetch_expunged(struct fetch *f);
/* At the end of a sync: list again for the after-action (after_again). */
bool fetch_again(struct fetch *f, bool stopping);
/* A body literal is open. */
bool fetch_streaming(const struct fetch *f);

#endif
